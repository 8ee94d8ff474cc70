package transport_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/transport"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ (go test runs them as
// plain tests too); `make fuzz` explores further.

func FuzzDecodeDatagram(f *testing.F) {
	ok, _ := transport.EncodeReport(&transportpb.LoadReport{ServerId: "m1", Incarnation: 1, Seq: 1, Cpu: 0.5, Rooms: []string{"a"}}, 0)
	f.Add(ok)
	f.Add([]byte{})
	f.Add([]byte{1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := transport.DecodeDatagram(b)
		if err != nil {
			if transport.Reason(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		// Whatever decodes re-encodes within the limits and decodes the same.
		again, err := transport.EncodeReport(r, transport.MaxDatagramSize)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, err := transport.DecodeDatagram(again)
		if err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
		if !proto.Equal(r, r2) {
			t.Fatalf("round trip changed the report: %v vs %v", r, r2)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	_ = transport.WriteFrame(&buf, &transportpb.Request{Version: 1, Body: &transportpb.Request_Allocate{Allocate: &transportpb.AllocateRequest{RequestId: "r", Room: "x", Units: 1}}})
	f.Add(buf.Bytes())
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range []proto.Message{&transportpb.Request{}, &transportpb.Response{}, &transportpb.ReportBatch{}} {
			err := transport.ReadFrame(bytes.NewReader(b), transport.MaxRequestFrame, m)
			if err != nil && !errors.Is(err, io.EOF) && transport.Reason(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
		}
	})
}

func FuzzEncodeReport(f *testing.F) {
	f.Add("m1", uint64(1), uint64(1), "room", "alloc", 3)
	f.Add("x", uint64(0), uint64(9), "", "a-very-long-allocation-id-0123456789", 200)
	f.Fuzz(func(t *testing.T, id string, inc, seq uint64, room, alloc string, n int) {
		if n < 0 || n > 1000 {
			return
		}
		r := &transportpb.LoadReport{ServerId: id, Incarnation: inc, Seq: seq}
		for i := 0; i < n; i++ {
			r.Rooms = append(r.Rooms, room)
			r.AllocationIds = append(r.AllocationIds, alloc)
		}
		b, err := transport.EncodeReport(r, 0)
		if err != nil {
			return
		}
		if len(b) > transport.ReportBudget {
			t.Fatalf("encoded %d bytes, budget %d", len(b), transport.ReportBudget)
		}
		got, err := transport.DecodeDatagram(b)
		if err != nil {
			if seq == 0 {
				return // invalid by protocol rule, refused on decode
			}
			t.Fatalf("decode: %v", err)
		}
		if got.GetServerId() != id {
			t.Fatalf("decoded id %q, want %q", got.GetServerId(), id)
		}
		complete := len(got.GetAllocationIds()) == n && len(got.GetRooms()) == n
		if !got.GetTruncated() && !complete {
			t.Fatalf("lists cut without saying so: %d/%d ids, %d/%d rooms", len(got.GetAllocationIds()), n, len(got.GetRooms()), n)
		}
		if got.GetTruncated() && (got.GetAllocationIdsTotal() != uint32(n) || got.GetRoomsTotal() != uint32(n)) {
			t.Fatalf("truncated report totals %d/%d, want %d", got.GetAllocationIdsTotal(), got.GetRoomsTotal(), n)
		}
	})
}
