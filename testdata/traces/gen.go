//go:build ignore

// gen writes the bundled traces. They are generated (deterministically, from
// fixed seeds) to look like what a recorder on a real deployment would
// produce: rooms arriving through the day, participants joining and leaving
// at random, publishers costing more than viewers, a webinar burst, and a
// multi-region fleet with some servers busy with other work.
//
//	go run testdata/traces/gen.go
package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
)

type ev struct {
	TMs       int64   `json:"t_ms"`
	Op        string  `json:"op"`
	ID        string  `json:"id,omitempty"`
	Capacity  int64   `json:"capacity,omitempty"`
	Region    string  `json:"region,omitempty"`
	Zone      string  `json:"zone,omitempty"`
	CPU       float64 `json:"cpu,omitempty"`
	EgressBps int64   `json:"egress_bps,omitempty"`
	Peers     int64   `json:"peers,omitempty"`
	RequestID string  `json:"request_id,omitempty"`
	Room      string  `json:"room,omitempty"`
	Units     int64   `json:"units,omitempty"`
	Requester string  `json:"requester,omitempty"`
}

func write(name, header string, evs []ev) {
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].TMs < evs[j].TMs })
	f, err := os.Create(filepath.Join("testdata", "traces", name))
	if err != nil {
		panic(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "# %s\n", header)
	enc := json.NewEncoder(f)
	for _, e := range evs {
		if err := enc.Encode(e); err != nil {
			panic(err)
		}
	}
}

// rooms adds sessions: each room opens at a random time, has a publisher
// (pubUnits) and viewers (1 unit) who join and leave at random.
func rooms(r *rand.Rand, evs []ev, prefix string, n int, spanMs int64, maxViewers int, pubUnits int64, requesters []string, regions []string) []ev {
	req := 0
	for i := range n {
		room := fmt.Sprintf("%s-%03d", prefix, i)
		open := r.Int64N(spanMs * 2 / 3)
		length := spanMs/6 + r.Int64N(spanMs/3)
		region := ""
		requester := ""
		if len(regions) > 0 {
			region = regions[r.IntN(len(regions))]
		}
		if len(requesters) > 0 {
			requester = requesters[r.IntN(len(requesters))]
		}
		people := 1 + r.IntN(maxViewers)
		for p := 0; p <= people; p++ {
			units := int64(1)
			join := open + r.Int64N(length/2+1)
			if p == 0 {
				units, join = pubUnits, open
			}
			leave := join + length/4 + r.Int64N(length)
			if p == 0 {
				leave = open + length + length/2
			}
			id := fmt.Sprintf("%s-r%d", prefix, req)
			req++
			evs = append(evs, ev{TMs: join, Op: "alloc", RequestID: id, Room: room, Units: units, Region: region, Requester: requester},
				ev{TMs: leave, Op: "release", RequestID: id})
		}
	}
	return evs
}

func main() {
	// 1. A steady working day on one region: 24 servers of 100 units, 80
	// rooms of up to 30 participants.
	{
		r := rand.New(rand.NewPCG(1, 2))
		var evs []ev
		for i := range 24 {
			evs = append(evs, ev{Op: "server", ID: fmt.Sprintf("m%02d", i), Capacity: 100, Region: "eu-west", Zone: string(rune('a' + i%3))})
		}
		evs = rooms(r, evs, "day", 80, 8*3600_000, 30, 4, nil, nil)
		write("steady-rooms.jsonl", "steady day: 24 servers x 100 units, 80 rooms of up to 30 participants over 8 h (publisher 4 units, viewer 1)", evs)
	}
	// 2. A webinar burst: one room takes 900 viewers in 90 s on top of 30
	// small meetings; 20 servers of 100 units. Shows cascades per room.
	{
		r := rand.New(rand.NewPCG(3, 4))
		var evs []ev
		for i := range 20 {
			evs = append(evs, ev{Op: "server", ID: fmt.Sprintf("s%02d", i), Capacity: 100, Region: "us-east", Zone: string(rune('a' + i%2))})
		}
		evs = rooms(r, evs, "meet", 30, 3600_000, 12, 4, nil, nil)
		evs = append(evs, ev{TMs: 600_000, Op: "alloc", RequestID: "web-pub", Room: "webinar", Units: 8})
		for v := range 900 {
			t := 600_000 + r.Int64N(90_000)
			evs = append(evs, ev{TMs: t, Op: "alloc", RequestID: fmt.Sprintf("web-v%d", v), Room: "webinar", Units: 1})
			evs = append(evs, ev{TMs: 2400_000 + r.Int64N(600_000), Op: "release", RequestID: fmt.Sprintf("web-v%d", v)})
		}
		write("webinar-burst.jsonl", "webinar burst: 20 servers x 100 units, 900 viewers join one room within 90 s, 30 small meetings around it", evs)
	}
	// 3. Three regions of 6 servers; requests come from media servers in a
	// region; two servers per region report high cpu from other work.
	{
		r := rand.New(rand.NewPCG(5, 6))
		var evs []ev
		regions := []string{"eu-west", "eu-central", "us-east"}
		var ids []string
		for ri, reg := range regions {
			for i := range 6 {
				id := fmt.Sprintf("%s-%d", reg, i)
				ids = append(ids, id)
				evs = append(evs, ev{Op: "server", ID: id, Capacity: 80, Region: reg, Zone: string(rune('a' + i%2))})
				cpu := 0.2 + 0.1*float64(ri)
				if i < 2 {
					cpu = 0.92
				}
				for t := int64(0); t < 4*3600_000; t += 300_000 {
					evs = append(evs, ev{TMs: t, Op: "load", ID: id, CPU: cpu + 0.05*r.Float64(), EgressBps: 200e6 + r.Int64N(300e6), Peers: 10 + r.Int64N(40)})
				}
			}
		}
		evs = rooms(r, evs, "geo", 60, 4*3600_000, 25, 4, ids, nil)
		write("multi-region.jsonl", "multi-region: 3 regions x 6 servers of 80 units, requests from media servers in each region, 2 servers per region at ~92% cpu", evs)
	}
}
