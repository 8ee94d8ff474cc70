package fsm_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// seedEntries are valid log entries that the fuzzer mutates.
func seedEntries(t testing.TB) [][]byte {
	var out [][]byte
	for _, batch := range randomCommands(7, 20) {
		b, err := fsm.Encode(1000, batch...)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzApply feeds arbitrary bytes to Apply as raft log entries, after a
// state with servers and allocations. Apply runs on every replica, so it
// must never panic, and whatever it accepts must keep the invariants: no
// server over capacity, used units equal to the active allocations, and
// the same bytes give the same state on two replicas.
func FuzzApply(f *testing.F) {
	for _, s := range seedEntries(f) {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := fsm.New(), fsm.New()
		for i, batch := range randomCommands(3, 10) {
			e, _ := fsm.Encode(int64(i), batch...)
			a.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: e})
			b.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: e})
		}
		a.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: data})
		b.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: data})
		if a.Hash() != b.Hash() {
			t.Fatal("same entry, different states")
		}
		for _, s := range a.Servers() {
			var used int64
			for _, al := range a.Allocations(fsm.AllocationFilter{Server: s.Id, ActiveOnly: true}) {
				used += al.Units
			}
			if used != s.UsedUnits || used > s.CapacityUnits {
				t.Fatalf("server %s: used_units %d, active allocations %d, capacity %d", s.Id, s.UsedUnits, used, s.CapacityUnits)
			}
		}
	})
}

// FuzzReadState feeds arbitrary bytes to the snapshot decoder (it reads
// `POST /v1/snapshot` bodies): it must never panic, and a state it accepts
// must restore and hash without panicking. The streaming reader must
// accept exactly what proto.Unmarshal accepts, with the same result.
func FuzzReadState(f *testing.F) {
	a := fsm.New()
	for _, batch := range randomCommands(5, 30) {
		e, _ := fsm.Encode(1, batch...)
		a.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: e})
	}
	var buf bytes.Buffer
	if err := fsm.WriteState(&buf, a.Export()); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{})
	empty, _ := proto.Marshal(&fsmpb.State{Version: fsm.StateVersion})
	f.Add(empty)
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAgrees(t, data) // codec_test.go
		st, err := fsm.ReadState(bytes.NewReader(data))
		if err != nil {
			return
		}
		r := fsm.New()
		if err := r.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			return
		}
		_ = r.Hash()
		_ = fsm.HashState(st)
		_ = fsm.ValidateState(st)
	})
}
