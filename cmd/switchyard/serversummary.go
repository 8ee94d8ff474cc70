package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/switchyard/switchyard/api"
)

// serverSummary is what `server list` prints before the servers (and
// `server list --summary --json` prints alone): counts and units by state
// and by region.
type serverSummary struct {
	Servers  int             `json:"servers"`
	Capacity int64           `json:"capacity"`
	Used     int64           `json:"used"`
	ByState  map[string]int  `json:"by_state"`
	ByRegion []regionSummary `json:"by_region"`
	byRegion map[string]*regionSummary
}

// regionSummary is one region's line of the summary.
type regionSummary struct {
	Region   string         `json:"region"`
	Servers  int            `json:"servers"`
	ByState  map[string]int `json:"by_state"`
	Capacity int64          `json:"capacity"`
	Used     int64          `json:"used"`
}

func summarizeServers(ss []api.Server) *serverSummary {
	sum := newServerSummary()
	for _, s := range ss {
		sum.add(s)
	}
	return sum.done()
}

// newServerSummary starts an empty summary: add each server (a page at a
// time: the summary keeps counts, not servers), then call done.
func newServerSummary() *serverSummary {
	return &serverSummary{ByState: map[string]int{}, byRegion: map[string]*regionSummary{}}
}

func (sum *serverSummary) add(s api.Server) {
	sum.Servers++
	sum.Capacity += s.Capacity
	sum.Used += s.Used
	sum.ByState[s.State]++
	r := sum.byRegion[s.Region]
	if r == nil {
		r = &regionSummary{Region: s.Region, ByState: map[string]int{}}
		sum.byRegion[s.Region] = r
	}
	r.Servers++
	r.ByState[s.State]++
	r.Capacity += s.Capacity
	r.Used += s.Used
}

// done fills ByRegion, sorted by region, and returns sum.
func (sum *serverSummary) done() *serverSummary {
	sum.ByRegion = sum.ByRegion[:0]
	for _, r := range sum.byRegion {
		sum.ByRegion = append(sum.ByRegion, *r)
	}
	slices.SortFunc(sum.ByRegion, func(a, b regionSummary) int {
		switch {
		case a.Region < b.Region:
			return -1
		case a.Region > b.Region:
			return 1
		}
		return 0
	})
	return sum
}

func pct(used, capacity int64) float64 {
	if capacity <= 0 {
		return 0
	}
	return 100 * float64(used) / float64(capacity)
}

func (sum *serverSummary) print(out io.Writer) error {
	fmt.Fprintf(out, "%d servers: %d active, %d draining, %d down; %d of %d units used (%.0f%%)\n", sum.Servers,
		sum.ByState["active"], sum.ByState["draining"], sum.ByState["down"], sum.Used, sum.Capacity, pct(sum.Used, sum.Capacity))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "REGION\tSERVERS\tACTIVE\tDRAINING\tDOWN\tUSED\tCAPACITY\tUSED%")
	for _, r := range sum.ByRegion {
		name := r.Region
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f%%\n", esc(name), r.Servers, r.ByState["active"], r.ByState["draining"], r.ByState["down"],
			r.Used, r.Capacity, pct(r.Used, r.Capacity))
	}
	return w.Flush()
}
