package httpapi

import (
	"errors"
	"fmt"
	"testing"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

func register(id string, capacity int64) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_RegisterServer{RegisterServer: &fsmpb.RegisterServer{Server: &fsmpb.Server{Id: id, CapacityUnits: capacity}}}}
}

func deregister(id string) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_DeregisterServer{DeregisterServer: &fsmpb.DeregisterServer{Id: id}}}
}

// hubAt returns a hub over f with its copy taken now, without the polling
// goroutine: the test drives advance itself.
func hubAt(f *fsm.FSM, retain, subBuf int) *watchHub {
	h := &watchHub{f: f, retain: retain, subBuf: subBuf, subs: map[*watchSub]struct{}{}, running: true}
	st, cur := f.ExportAt()
	h.load(st)
	h.cur = cur
	return h
}

func apply(t *testing.T, f *fsm.FSM, h *watchHub, index uint64, cmds ...*fsmpb.Command) {
	t.Helper()
	for _, r := range f.ApplyEnvelope(index, &fsmpb.Envelope{Version: fsm.EnvelopeVersion, NowUnixMs: int64(index), Batch: &fsmpb.Batch{Commands: cmds}}) {
		if err := fsm.ResultError(r); err != nil {
			t.Fatalf("apply at %d: %v", index, err)
		}
	}
	h.step()
}

// TestWatchHubDiffsResumesCompactsAndCutsOffSlowWatchers: ticks carry
// exactly the changed objects; a resume gets the ticks after its index and
// nothing else; an index older than the history gets what the state's
// change log says changed since, and is refused once the log does not
// reach back either; a watcher
// that does not read is cut off while another keeps receiving.
func TestWatchHubDiffsResumesCompactsAndCutsOffSlowWatchers(t *testing.T) {
	f := fsm.New()
	h := hubAt(f, 12, 3)
	apply(t, f, h, 1, register("m1", 4), register("m2", 4))
	apply(t, f, h, 2, register("m1", 8))
	apply(t, f, h, 3, deregister("m2"))
	want := map[uint64]string{1: "m1 upsert,m2 upsert", 2: "m1 upsert", 3: "m2 delete"}
	for _, tk := range h.ticks {
		got := ""
		for _, ev := range tk.events {
			if ev.Kind == api.WatchServer {
				if got != "" {
					got += ","
				}
				got += ev.ID + " " + ev.Op
			}
		}
		if got != want[tk.index] || tk.events[len(tk.events)-1].Kind != api.WatchSynced {
			t.Fatalf("tick %d: %q, want %q (events %+v)", tk.index, got, want[tk.index], tk.events)
		}
	}

	since := uint64(1)
	_, backlog, err := h.subscribe(&since)
	if err != nil || len(backlog) != 2 || backlog[0].index != 2 || backlog[1].index != 3 {
		t.Fatalf("resume after 1: %v %+v", err, backlog)
	}
	slow, _, _ := h.subscribe(nil)
	fast, copyTick, _ := h.subscribe(nil)
	if evs := copyTick[0].events; evs[0].Kind != api.WatchReset || evs[1].ID != "m1" || evs[1].Server.Capacity != 8 || evs[len(evs)-1].Index != 3 {
		t.Fatalf("copy: %+v", evs)
	}
	for i := uint64(4); i < 12; i++ {
		apply(t, f, h, i, register(fmt.Sprintf("s%d", i), 1))
		for len(fast.ch) > 0 {
			<-fast.ch
		}
	}
	if _, open := <-slow.ch; open && !slow.dropped {
		t.Fatal("a watcher that never read was not cut off")
	}
	if fast.dropped {
		t.Fatal("a reading watcher was cut off")
	}
	// Retention (12 events) has dropped the early ticks.
	if h.base <= 1 {
		t.Fatalf("history base %d after %d ticks", h.base, len(h.ticks))
	}
	// Before the history, the state's change log answers: every server
	// changed after index 1, as of the hub's copy (m2 is gone), in one
	// tick at the copy's index.
	old := uint64(1)
	_, backlog, err = h.subscribe(&old)
	if err != nil || len(backlog) != 1 || backlog[0].index != 11 {
		t.Fatalf("resume before the history: %v %+v", err, backlog)
	}
	got := ""
	for _, ev := range backlog[0].events {
		if ev.Kind == api.WatchServer {
			got += fmt.Sprintf("%s %s %d,", ev.ID, ev.Op, ev.Server.Capacity)
		}
	}
	if want := "m1 upsert 8,m2 delete 0,s10 upsert 1,s11 upsert 1,s4 upsert 1,s5 upsert 1,s6 upsert 1,s7 upsert 1,s8 upsert 1,s9 upsert 1,"; got != want {
		t.Fatalf("catch-up after 1: %q, want %q", got, want)
	}
	if evs := backlog[0].events; evs[0].Kind == api.WatchReset || evs[len(evs)-1].Kind != api.WatchSynced || evs[len(evs)-1].Index != 11 {
		t.Fatalf("catch-up after 1: %+v", evs)
	}
	// Once the change log no longer reaches back either: 410.
	for i := uint64(12); i < 12+16_400; i++ {
		f.ApplyEnvelope(i, &fsmpb.Envelope{Version: fsm.EnvelopeVersion, NowUnixMs: int64(i), Batch: &fsmpb.Batch{Commands: []*fsmpb.Command{register(fmt.Sprintf("x%d", i%50), int64(i))}}})
	}
	if _, _, err := h.subscribe(&old); !errors.Is(err, errCompacted) {
		t.Fatalf("resume before the history and the change log: %v", err)
	}
}

// BenchmarkWatchHubStep: what one change costs the watch hub with a large
// state, following the state's change log ("delta") against copying and
// diffing the whole state ("copy", what a start over costs).
func BenchmarkWatchHubStep(b *testing.B) {
	const servers, allocs = 100_000, 100_000
	f := fsm.New()
	index := uint64(0)
	applyAll := func(cmds []*fsmpb.Command) {
		index++
		for _, r := range f.ApplyEnvelope(index, &fsmpb.Envelope{Version: fsm.EnvelopeVersion, NowUnixMs: int64(index), Batch: &fsmpb.Batch{Commands: cmds}}) {
			if err := fsm.ResultError(r); err != nil {
				b.Fatal(err)
			}
		}
	}
	var cmds []*fsmpb.Command
	for i := range servers {
		cmds = append(cmds, register(fmt.Sprintf("m%d", i), 1000))
		if len(cmds) == 1000 {
			applyAll(cmds)
			cmds = nil
		}
	}
	allocate := func(i int) *fsmpb.Command {
		return &fsmpb.Command{Cmd: &fsmpb.Command_Allocate{Allocate: &fsmpb.AllocateDecision{RequestId: fmt.Sprintf("r%d", i), Room: fmt.Sprintf("room%d", i), Server: fmt.Sprintf("m%d", i%servers), Units: 1}}}
	}
	for i := range allocs {
		cmds = append(cmds, allocate(i))
		if len(cmds) == 1000 {
			applyAll(cmds)
			cmds = nil
		}
	}
	for _, mode := range []string{"delta", "copy"} {
		b.Run(fmt.Sprintf("mode=%s/servers=%d/allocations=%d", mode, servers, allocs), func(b *testing.B) {
			h := hubAt(f, 1000, 16)
			n := allocs
			for b.Loop() {
				applyAll([]*fsmpb.Command{allocate(n)})
				n++
				if mode == "copy" {
					h.cur = fsm.ChangeCursor{} // the change log cannot answer: copy and diff
				}
				h.step()
			}
		})
	}
}
