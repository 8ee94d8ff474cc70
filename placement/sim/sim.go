// Package sim replays a recorded request/load trace against placement
// policies, so an operator can compare policies before committing one
// (`switchyard policy simulate`). The trace format is documented in
// testdata/traces/README.md. Replays are deterministic: the same trace and
// policy always give the same figures.
package sim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/placement"
)

// Event is one line of a trace.
type Event struct {
	// TMs is the event's time in milliseconds from the trace start; events
	// must be in non-decreasing time order.
	TMs int64 `json:"t_ms"`
	// Op is server, load, alloc, release or drain.
	Op string `json:"op"`

	// server / load / drain
	ID       string `json:"id,omitempty"`
	Capacity int64  `json:"capacity,omitempty"`
	Region   string `json:"region,omitempty"`
	Zone     string `json:"zone,omitempty"`
	// load
	CPU        float64 `json:"cpu,omitempty"`
	EgressBps  int64   `json:"egress_bps,omitempty"`
	IngressBps int64   `json:"ingress_bps,omitempty"`
	Peers      int64   `json:"peers,omitempty"`

	// alloc / release
	RequestID string `json:"request_id,omitempty"`
	Room      string `json:"room,omitempty"`
	Units     int64  `json:"units,omitempty"`
	Requester string `json:"requester,omitempty"`
}

// ErrTrace is wrapped by every trace format error.
var ErrTrace = errors.New("bad trace")

// Read parses a JSON-lines trace. Blank lines and lines starting with # are
// skipped. Errors name the line.
func Read(r io.Reader) ([]Event, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []Event
	line := 0
	var last int64
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		var ev Event
		dec := json.NewDecoder(strings.NewReader(s))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ev); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrTrace, line, err)
		}
		if err := check(ev); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrTrace, line, err)
		}
		if ev.TMs < last {
			return nil, fmt.Errorf("%w: line %d: time %d ms goes backwards (previous %d)", ErrTrace, line, ev.TMs, last)
		}
		last = ev.TMs
		out = append(out, ev)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no events", ErrTrace)
	}
	return out, nil
}

func check(ev Event) error {
	switch ev.Op {
	case "server":
		if ev.ID == "" || ev.Capacity <= 0 {
			return errors.New("server needs id and a positive capacity")
		}
	case "load", "drain":
		if ev.ID == "" {
			return fmt.Errorf("%s needs id", ev.Op)
		}
	case "alloc":
		if ev.RequestID == "" || ev.Room == "" || ev.Units <= 0 {
			return errors.New("alloc needs request_id, room and positive units")
		}
	case "release":
		if ev.RequestID == "" {
			return errors.New("release needs request_id")
		}
	default:
		return fmt.Errorf("unknown op %q (want server, load, alloc, release or drain)", ev.Op)
	}
	return nil
}

// Result is what one policy did with a trace.
type Result struct {
	Policy string `json:"policy"`
	// Placed and Refused count alloc events.
	Placed  int `json:"placed"`
	Refused int `json:"refused"`
	// ServersTouched is how many servers ever held an allocation;
	// PeakServers the most that held one at the same time.
	ServersTouched int `json:"servers_touched"`
	PeakServers    int `json:"peak_servers"`
	// LowerBound is ⌈peak concurrent demand / largest capacity⌉: no policy
	// can use fewer servers at that moment. Ratio = PeakServers/LowerBound.
	PeakDemand int64   `json:"peak_demand"`
	LowerBound int     `json:"lower_bound"`
	Ratio      float64 `json:"ratio"`
	// PeakUtilization is the highest used/capacity of any server.
	PeakUtilization float64 `json:"peak_utilization"`
	// Overloads counts placements that left a server above the overload
	// threshold (of capacity units), or on a server reporting cpu above it.
	Overloads int `json:"overloads"`
	// Cascades is, summed over rooms, the most servers the room spanned at
	// once minus one; MaxCascade the largest for one room.
	Cascades   int `json:"cascades"`
	MaxCascade int `json:"max_cascade"`
	// Rooms is the number of rooms placed; CascadesPerRoom = Cascades/Rooms.
	Rooms           int     `json:"rooms"`
	CascadesPerRoom float64 `json:"cascades_per_room"`
}

// Options tune Run.
type Options struct {
	// Overload is the utilisation above which a placement counts as an
	// overload. 0 means 0.9.
	Overload float64
}

type srv struct {
	c     placement.Candidate
	load  *placement.Load     // last load event (nil: none)
	rooms map[string]struct{} // rooms it holds allocations of
}

// candidate is s as placement sees it: its load, when it reported one,
// lists the rooms it holds allocations of.
func (s *srv) candidate() placement.Candidate {
	c := s.c
	if s.load != nil {
		l := *s.load
		l.Rooms = make([]string, 0, len(s.rooms))
		for r := range s.rooms {
			l.Rooms = append(l.Rooms, r)
		}
		slices.Sort(l.Rooms)
		c.Load = &l
	}
	return c
}

type alloc struct {
	room, server string
	units        int64
}

// Run replays events against one policy. It places through a
// placement.Index (the leader's), so a replay costs about O(log N) per
// request and fleets of 100,000 servers replay in seconds.
func Run(name string, pol *placement.Policy, events []Event, opt Options) (Result, error) {
	over := opt.Overload
	if over <= 0 {
		over = 0.9
	}
	res := Result{Policy: name}
	ix := placement.NewIndex(pol)
	servers := map[string]*srv{}
	allocs := map[string]alloc{}
	rooms := map[string]map[string]int64{} // room -> server -> units
	peakSpan := map[string]int{}
	touched := map[string]bool{}
	var demand, maxCap int64
	busy := 0 // servers holding units
	setUsed := func(s *srv, used int64) {
		if (s.c.Used > 0) != (used > 0) {
			if used > 0 {
				busy++
			} else {
				busy--
			}
		}
		s.c.Used = used
	}
	for _, ev := range events {
		switch ev.Op {
		case "server":
			s, ok := servers[ev.ID]
			if !ok {
				s = &srv{rooms: map[string]struct{}{}}
				servers[ev.ID] = s
			}
			s.c.ID, s.c.Region, s.c.Zone, s.c.Capacity, s.c.Active, s.c.State = ev.ID, ev.Region, ev.Zone, ev.Capacity, true, "active"
			maxCap = max(maxCap, ev.Capacity)
			ix.Upsert(s.candidate())
		case "drain":
			if s, ok := servers[ev.ID]; ok {
				s.c.Active, s.c.State = false, "draining"
				ix.Upsert(s.candidate())
			}
		case "load":
			s, ok := servers[ev.ID]
			if !ok {
				return res, fmt.Errorf("%w: load for unknown server %q at %d ms", ErrTrace, ev.ID, ev.TMs)
			}
			s.load = &placement.Load{CPU: ev.CPU, EgressBps: ev.EgressBps, IngressBps: ev.IngressBps, Peers: ev.Peers}
			ix.Upsert(s.candidate())
		case "release":
			a, ok := allocs[ev.RequestID]
			if !ok {
				continue // refused earlier, or never placed
			}
			delete(allocs, ev.RequestID)
			s := servers[a.server]
			setUsed(s, s.c.Used-a.units)
			demand -= a.units
			rooms[a.room][a.server] -= a.units
			if rooms[a.room][a.server] <= 0 {
				delete(rooms[a.room], a.server)
				delete(s.rooms, a.room)
			}
			ix.Upsert(s.candidate())
		case "alloc":
			if _, dup := allocs[ev.RequestID]; dup {
				continue
			}
			region, zone := ev.Region, ev.Zone
			if rq, ok := servers[ev.Requester]; ok && region == "" {
				region, zone = rq.c.Region, rq.c.Zone
			}
			// A trace's requester only locates the viewer (region/zone); it
			// is not a full origin asking to spill, so it is not passed on
			// (the live cluster never places on the requester itself).
			id, err := ix.Pick(placement.Request{ID: ev.RequestID, Room: ev.Room, Units: ev.Units, Region: region, Zone: zone,
				Hosting: maps.Clone(rooms[ev.Room])})
			if err != nil {
				if errors.Is(err, fsm.ErrCapacity) || errors.Is(err, fsm.ErrServerNotActive) {
					res.Refused++
					continue
				}
				return res, fmt.Errorf("policy %s at %d ms: %w", name, ev.TMs, err)
			}
			s := servers[id]
			setUsed(s, s.c.Used+ev.Units)
			demand += ev.Units
			res.Placed++
			touched[id] = true
			allocs[ev.RequestID] = alloc{room: ev.Room, server: id, units: ev.Units}
			if rooms[ev.Room] == nil {
				rooms[ev.Room] = map[string]int64{}
			}
			rooms[ev.Room][id] += ev.Units
			s.rooms[ev.Room] = struct{}{}
			ix.Upsert(s.candidate())
			peakSpan[ev.Room] = max(peakSpan[ev.Room], len(rooms[ev.Room]))
			u := float64(s.c.Used) / float64(s.c.Capacity)
			res.PeakUtilization = max(res.PeakUtilization, u)
			if u > over || s.load != nil && s.load.CPU > over {
				res.Overloads++
			}
			if demand > res.PeakDemand {
				res.PeakDemand = demand
				res.LowerBound = int((demand + maxCap - 1) / maxCap)
			}
			res.PeakServers = max(res.PeakServers, busy)
		}
	}
	res.ServersTouched = len(touched)
	for _, n := range peakSpan {
		res.Cascades += n - 1
		res.MaxCascade = max(res.MaxCascade, n-1)
	}
	res.Rooms = len(peakSpan)
	if res.Rooms > 0 {
		res.CascadesPerRoom = float64(res.Cascades) / float64(res.Rooms)
	}
	if res.LowerBound > 0 {
		res.Ratio = float64(res.PeakServers) / float64(res.LowerBound)
	}
	return res, nil
}

// Format prints results side by side as a table.
func Format(w io.Writer, rs []Result) error {
	cols := []string{"POLICY", "PLACED", "REFUSED", "SERVERS", "PEAK", "BOUND", "RATIO", "PEAK-UTIL", "OVERLOADS", "CASCADES", "PER-ROOM", "MAX-CASCADE"}
	rows := [][]string{cols}
	for _, r := range rs {
		rows = append(rows, []string{r.Policy, fmt.Sprint(r.Placed), fmt.Sprint(r.Refused), fmt.Sprint(r.ServersTouched), fmt.Sprint(r.PeakServers),
			fmt.Sprint(r.LowerBound), fmt.Sprintf("%.2f", r.Ratio), fmt.Sprintf("%.0f%%", 100*r.PeakUtilization), fmt.Sprint(r.Overloads),
			fmt.Sprint(r.Cascades), fmt.Sprintf("%.2f", r.CascadesPerRoom), fmt.Sprint(r.MaxCascade)})
	}
	width := make([]int, len(cols))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, c := range row {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(c)
			if i < len(row)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-len(c)))
			}
		}
		b.WriteString("\n")
		if _, err := io.WriteString(w, b.String()); err != nil {
			return err
		}
	}
	return nil
}
