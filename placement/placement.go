// Package placement scores candidate media servers for an allocation
// request. It is pure: the leader's decision loop hands it a view of the
// fleet (committed units plus reservations still in flight) and gets back a
// server id or an error saying which capacity was missing. Policies that
// issue #6 adds (bin-pack, affinity, region, two-choice, expressions) plug in
// here.
package placement

import (
	"fmt"
	"sort"
	"strings"

	"github.com/switchyard/switchyard/fsm"
)

// Candidate is one server as the decision loop sees it.
type Candidate struct {
	ID       string
	Region   string
	Zone     string
	Capacity int64
	// Used counts committed units plus units reserved by decisions that are
	// in flight (proposed but not yet applied).
	Used   int64
	Active bool
	// State is the server state's name, for error messages.
	State string
	// Load is the server's last reported load (soft state, issue #3); nil
	// when the leader has no report for it yet (e.g. just after an
	// election), in which case only registry data is used.
	Load *Load
}

// Load is a media server's reported load as the leader's view holds it.
type Load struct {
	CPU        float64 // 0..1 of the server's cores
	IngressBps int64
	EgressBps  int64
	Peers      int64
	Tracks     int64
	Rooms      []string
	AgeMs      int64
	// Unmaterialized is the units of allocations committed on this server
	// that its last report did not yet list: reservations the reported
	// figures do not reflect yet.
	Unmaterialized int64
}

// Free is the number of units still available on c.
func (c Candidate) Free() int64 { return c.Capacity - c.Used }

// Request is what a caller asks for.
type Request struct {
	Room   string
	Units  int64
	Region string
	// Server pins the allocation to one server; empty lets the policy pick.
	Server string
}

// Pick returns the id of the server the strategy prefers for req among
// cands, or an error wrapping fsm.ErrCapacity, fsm.ErrNotFound or
// fsm.ErrServerNotActive that says what was missing. It never returns a
// server whose free units are fewer than req.Units.
func Pick(strategy string, cands []Candidate, req Request) (string, error) {
	if err := fsm.ValidateRequest(req.Room, req.Units); err != nil {
		return "", err
	}
	if req.Server != "" {
		for _, c := range cands {
			if c.ID != req.Server {
				continue
			}
			switch {
			case !c.Active:
				return "", fmt.Errorf("%w: server %s is %s", fsm.ErrServerNotActive, c.ID, c.State)
			case c.Free() < req.Units:
				return "", fmt.Errorf("%w: server %s has %d of %d units free, request needs %d", fsm.ErrCapacity, c.ID, c.Free(), c.Capacity, req.Units)
			}
			return c.ID, nil
		}
		return "", fmt.Errorf("%w: server %q is not registered", fsm.ErrNotFound, req.Server)
	}
	var best *Candidate
	for i := range cands {
		c := &cands[i]
		if !c.Active || c.Free() < req.Units {
			continue
		}
		if best == nil || better(strategy, req, c, best) {
			best = c
		}
	}
	if best == nil {
		return "", noFit(cands, req)
	}
	return best.ID, nil
}

// better reports whether a beats b for req under the strategy. Ties break on
// id so that every caller with the same view makes the same choice.
func better(strategy string, req Request, a, b *Candidate) bool {
	if req.Region != "" {
		ar, br := a.Region == req.Region, b.Region == req.Region
		if ar != br {
			return ar
		}
	}
	// Compare utilisation after placing the request: used/capacity, by
	// cross-multiplication to stay in integers.
	au, bu := (a.Used+req.Units)*b.Capacity, (b.Used+req.Units)*a.Capacity
	if au != bu {
		if strategy == "bin-pack" {
			return au > bu
		}
		return au < bu
	}
	return a.ID < b.ID
}

// noFit explains why no candidate could take req.
func noFit(cands []Candidate, req Request) error {
	if len(cands) == 0 {
		return fmt.Errorf("%w: no media servers are registered", fsm.ErrCapacity)
	}
	var active, inactive int
	var maxFree int64 = -1
	var maxID string
	for _, c := range cands {
		if !c.Active {
			inactive++
			continue
		}
		active++
		if c.Free() > maxFree {
			maxFree, maxID = c.Free(), c.ID
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "no server has %d free units", req.Units)
	if active > 0 {
		fmt.Fprintf(&b, " (most free: %s with %d", maxID, maxFree)
		if active > 1 {
			fmt.Fprintf(&b, "; %d active servers", active)
		}
		b.WriteString(")")
	}
	if inactive > 0 {
		names := make([]string, 0, inactive)
		for _, c := range cands {
			if !c.Active {
				names = append(names, c.ID+" "+c.State)
			}
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "; not active: %s", strings.Join(names, ", "))
	}
	return fmt.Errorf("%w: %s", fsm.ErrCapacity, b.String())
}
