package fsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// bigState is a state whose encoding spans several of the codec's chunks
// (1 MiB) and blocks: 3,000 servers and 40,000 allocations, a third ended.
func bigState(t testing.TB) *fsm.FSM {
	t.Helper()
	f := fsm.New()
	var cmds []*fsmpb.Command
	for i := range 3000 {
		cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_RegisterServer{RegisterServer: &fsmpb.RegisterServer{Server: &fsmpb.Server{
			Id: fmt.Sprintf("media-%05d", i), CapacityUnits: 100, Region: "eu", Labels: map[string]string{"sfu": "switchyard", "rack": fmt.Sprint(i % 7)}}}}})
	}
	f.ApplyEnvelope(1, &fsmpb.Envelope{Version: fsm.EnvelopeVersion, NowUnixMs: 1, Batch: &fsmpb.Batch{Commands: cmds}})
	for e := range 4 {
		cmds = cmds[:0]
		for j := range 10_000 {
			i := e*10_000 + j
			cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_Allocate{Allocate: &fsmpb.AllocateDecision{
				RequestId: fmt.Sprintf("req-%06d", i), Room: fmt.Sprintf("room-%d", i%900), Server: fmt.Sprintf("media-%05d", i%3000), Units: 1}}})
		}
		f.ApplyEnvelope(uint64(2+e), &fsmpb.Envelope{Version: fsm.EnvelopeVersion, NowUnixMs: 2, Batch: &fsmpb.Batch{Commands: cmds}})
	}
	cmds = cmds[:0]
	for i := 0; i < 40_000; i += 3 {
		cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_Release{Release: &fsmpb.Release{Id: fmt.Sprintf("req-%06d", i)}}})
	}
	f.ApplyEnvelope(6, &fsmpb.Envelope{Version: fsm.EnvelopeVersion, NowUnixMs: 3, Batch: &fsmpb.Batch{Commands: cmds}})
	return f
}

// TestSnapshotCodecAtSize writes a state bigger than the codec's chunks
// through raft's Persist and reads it back both ways: the streaming
// reader and a plain proto.Unmarshal of the same bytes give the state
// that was written, and a restored replica hashes and continues like the
// original.
func TestSnapshotCodecAtSize(t *testing.T) {
	f := bigState(t)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	data := sink.Bytes()
	if len(data) < 2<<20 {
		t.Fatalf("snapshot of %d bytes does not span several chunks", len(data))
	}
	plain := &fsmpb.State{}
	if err := proto.Unmarshal(data, plain); err != nil {
		t.Fatalf("a plain protobuf decoder cannot read the snapshot: %v", err)
	}
	streamed, err := fsm.ReadState(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(plain, streamed) {
		t.Fatal("the streaming reader and proto.Unmarshal disagree")
	}
	want := f.Hash()
	if got := fsm.HashState(streamed); got != want {
		t.Fatalf("read state hashes %s, the state %s", got, want)
	}
	g := fsm.New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if g.Hash() != want {
		t.Fatal("restore changed the state hash")
	}
	// The derived indexes (by server, by room) are rebuilt as they were.
	for _, s := range f.Servers() {
		if a, b := activeOn(f, s.Id), activeOn(g, s.Id); a != b || a != s.UsedUnits {
			t.Fatalf("server %s: %d active allocations indexed, %d after restore, %d units used", s.Id, a, b, s.UsedUnits)
		}
	}
	hosted := 0
	for i := range 900 {
		room := fmt.Sprintf("room-%d", i)
		a, b := f.RoomUnits(room), g.RoomUnits(room)
		if !maps.Equal(a, b) {
			t.Fatalf("room %s: units by server %v, after restore %v", room, a, b)
		}
		if len(a) > 0 {
			hosted++
		}
	}
	if hosted != 600 { // rooms whose number is a multiple of 3 were released
		t.Fatalf("%d rooms hosted, want 600", hosted)
	}
	// The derived indexes were rebuilt: ending the rest of the
	// allocations leaves both replicas equal and every server empty.
	var cmds []*fsmpb.Command
	for i := range 40_000 {
		if i%3 != 0 {
			cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_Release{Release: &fsmpb.Release{Id: fmt.Sprintf("req-%06d", i)}}})
		}
	}
	data2, _ := fsm.Encode(4, cmds...)
	for _, r := range []*fsm.FSM{f, g} {
		r.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data2})
	}
	if f.Hash() != g.Hash() {
		t.Fatal("replicas diverged after restore")
	}
	for _, s := range g.Servers() {
		if n := activeOn(g, s.Id); s.UsedUnits != 0 || n != 0 {
			t.Fatalf("server %s: used %d, indexed %d after every allocation ended", s.Id, s.UsedUnits, n)
		}
	}
}

func activeOn(f *fsm.FSM, server string) (n int64) {
	f.ActiveAllocationsOn(server, func(*fsmpb.Allocation) { n++ })
	return n
}

// TestReadStateAgreesWithUnmarshal cuts and corrupts a snapshot and
// checks that the streaming reader accepts exactly what proto.Unmarshal
// accepts, with the same result, and refuses the rest as ErrInvalid.
func TestReadStateAgreesWithUnmarshal(t *testing.T) {
	var buf bytes.Buffer
	if err := fsm.WriteState(&buf, bigState(t).Export()); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	// An unknown field larger than the reader's block, then the version
	// again: the reader must grow its buffer, keep the field, and end well.
	huge := protowire.AppendTag(nil, 99, protowire.BytesType)
	huge = protowire.AppendBytes(huge, bytes.Repeat([]byte{7}, 3<<20))
	cases := []struct {
		name string
		data []byte
	}{
		{"whole", good},
		{"empty", nil},
		{"with a 3 MiB unknown field", append(append([]byte{}, good...), huge...)},
		{"unknown field first", append(append([]byte{}, huge...), good...)},
		{"a byte of garbage after", append(append([]byte{}, good...), 0xff)},
		{"end group at the top", append(append([]byte{}, good...), protowire.AppendTag(nil, 5, protowire.EndGroupType)...)},
		{"a field number 0", append([]byte{0x02, 0x00}, good...)},
		{"a varint of 11 bytes", append(append([]byte{}, good...), 0x38, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
		{"a length past the end", append(append([]byte{}, good...), 0x22, 0xff, 0xff, 0xff, 0x0f, 0x01)},
		{"a group at the top", append(append(append([]byte{}, good...), protowire.AppendTag(nil, 77, protowire.StartGroupType)...), protowire.AppendTag(nil, 77, protowire.EndGroupType)...)},
		{"a malformed allocation", append(append([]byte{}, good...), 0x22, 0x02, 0x0a, 0x05)},
	}
	for _, cut := range []int{1, 2, 3, 100, 1 << 20, 1<<20 + 1, len(good) / 2, len(good) - 1} {
		cases = append(cases, struct {
			name string
			data []byte
		}{fmt.Sprintf("cut at %d", cut), good[:cut]})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkAgrees(t, c.data)
		})
	}
}

// checkAgrees fails unless ReadState(data) is what proto.Unmarshal and
// the version check make of data.
func checkAgrees(t *testing.T, data []byte) {
	t.Helper()
	want := &fsmpb.State{}
	werr := proto.Unmarshal(data, want)
	got, err := fsm.ReadState(bytes.NewReader(data))
	// Restore, which builds the state while it decodes, takes and refuses
	// the same.
	if rerr := fsm.New().Restore(io.NopCloser(bytes.NewReader(data))); (rerr == nil) != (err == nil) {
		t.Fatalf("ReadState: %v; Restore: %v", err, rerr)
	}
	switch {
	case werr != nil:
		if !errors.Is(err, fsm.ErrInvalid) {
			t.Fatalf("proto.Unmarshal refuses (%v), ReadState: %v", werr, err)
		}
	case want.GetVersion() != fsm.StateVersion:
		if !errors.Is(err, fsm.ErrUnsupportedVersion) {
			t.Fatalf("version %d: ReadState: %v", want.GetVersion(), err)
		}
	case err != nil:
		t.Fatalf("proto.Unmarshal accepts, ReadState: %v", err)
	case !proto.Equal(want, got):
		t.Fatal("ReadState and proto.Unmarshal disagree")
	}
}

// TestReadStateSourceError: an error of the source is returned as itself,
// not as a malformed snapshot.
func TestReadStateSourceError(t *testing.T) {
	boom := errors.New("disk on fire")
	_, err := fsm.ReadState(io.MultiReader(bytes.NewReader([]byte{0x08, 0x01}), errReader{boom}))
	if !errors.Is(err, boom) || errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("ReadState: %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestWriteStateStopsOnAWriteError: a failing writer ends WriteState with
// its error, and no encoder is left reading the state.
func TestWriteStateStopsOnAWriteError(t *testing.T) {
	st := bigState(t).Export()
	before := runtime.NumGoroutine()
	for _, after := range []int{0, 1, 5} {
		w := &failingWriter{after: after}
		if err := fsm.WriteState(w, st); !errors.Is(err, errWrite) {
			t.Fatalf("write fails after %d writes: WriteState returned %v", after, err)
		}
	}
	// An encoder that has signalled its end may still be exiting when
	// WriteState returns (on a busy machine, for a while): poll.
	deadline := time.Now().Add(30 * time.Second)
	for n := runtime.NumGoroutine(); n > before; n = runtime.NumGoroutine() {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines 30 s after WriteState returned, %d before", n, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var errWrite = errors.New("disk full")

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after == 0 {
		return 0, errWrite
	}
	w.after--
	return len(p), nil
}
