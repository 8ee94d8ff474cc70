package transport_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/switchyard/switchyard/transport"
	"github.com/switchyard/switchyard/transport/transportpb"
)

func TestDecodeDatagramErrors(t *testing.T) {
	valid, err := transport.EncodeReport(&transportpb.LoadReport{ServerId: "m1", Incarnation: 1, Seq: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, transport.ErrTruncated},
		{"one byte", []byte{1}, transport.ErrTruncated},
		{"oversized", bytes.Repeat([]byte{1}, transport.MaxDatagramSize+1), transport.ErrOversized},
		{"wrong version", append([]byte{0}, valid[1:]...), transport.ErrWrongVersion},
		{"unknown type", append([]byte{1, 2}, valid[2:]...), transport.ErrUnknownType},
		{"garbage", []byte{1, 1, 0xff}, transport.ErrMalformed},
		{"no id", []byte{1, 1, 0x18, 0x01}, transport.ErrMalformed},
		{"zero seq", []byte{1, 1, 0x0a, 0x02, 'm', '1'}, transport.ErrMalformed},
		{"valid", valid, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := transport.DecodeDatagram(tc.b)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEncodeReportTruncates(t *testing.T) {
	var ids, rooms []string
	for i := 0; i < 200; i++ {
		ids = append(ids, fmt.Sprintf("allocation-%04d", i))
		rooms = append(rooms, fmt.Sprintf("room-%04d", i))
	}
	r := &transportpb.LoadReport{ServerId: "m1", Incarnation: 3, Seq: 9, AllocationIds: ids, Rooms: rooms}
	b, err := transport.EncodeReport(r, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > transport.ReportBudget {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := transport.DecodeDatagram(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.GetTruncated() || got.GetAllocationIdsTotal() != 200 || got.GetRoomsTotal() != 200 {
		t.Fatalf("truncation not recorded: %v", got)
	}
	if len(got.GetAllocationIds()) == 0 || got.GetAllocationIds()[0] != "allocation-0000" {
		t.Fatalf("kept ids %v (want the first ones)", got.GetAllocationIds())
	}
	if len(r.GetAllocationIds()) != 200 {
		t.Fatal("input modified")
	}
	small := &transportpb.LoadReport{ServerId: "m1", Seq: 1, Rooms: []string{"a"}}
	b, _ = transport.EncodeReport(small, 0)
	if got, _ := transport.DecodeDatagram(b); got.GetTruncated() {
		t.Fatal("small report marked truncated")
	}
	if _, err := transport.EncodeReport(&transportpb.LoadReport{}, 0); !errors.Is(err, transport.ErrMalformed) {
		t.Fatalf("empty id: %v", err)
	}
}

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	req := &transportpb.Request{Version: 1, Body: &transportpb.Request_Release{Release: &transportpb.ReleaseRequest{Id: "a1"}}}
	if err := transport.WriteFrame(&buf, req); err != nil {
		t.Fatal(err)
	}
	whole := append([]byte{}, buf.Bytes()...)
	for _, tc := range []struct {
		name string
		b    []byte
		max  int
		want error
	}{
		{"whole", whole, transport.MaxRequestFrame, nil},
		{"eof", nil, transport.MaxRequestFrame, io.EOF},
		{"half header", whole[:2], transport.MaxRequestFrame, transport.ErrTruncated},
		{"half body", whole[:len(whole)-1], transport.MaxRequestFrame, transport.ErrTruncated},
		{"too large", whole, 2, transport.ErrOversized},
		{"garbage", []byte{0, 0, 0, 2, 0xff, 0xff}, transport.MaxRequestFrame, transport.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got transportpb.Request
			err := transport.ReadFrame(bytes.NewReader(tc.b), tc.max, &got)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err == nil && got.GetRelease().GetId() != "a1" {
				t.Fatalf("decoded %v", &got)
			}
		})
	}
}
