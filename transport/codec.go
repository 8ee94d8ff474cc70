package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/quic-go/quic-go"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// Wire constants. Changing any of them is a protocol change: bump
// WireVersion (datagrams) or RequestVersion (streams) and the ALPN.
const (
	// ALPN is the TLS application protocol of media-node and agent-to-agent
	// QUIC connections.
	ALPN = "switchyard/1"
	// WireVersion is the first byte of every datagram.
	WireVersion = 1
	// TypeLoadReport is the second byte of a load-report datagram.
	TypeLoadReport = 1
	// RequestVersion is Request.version of this protocol generation.
	RequestVersion = 1
	// MaxDatagramSize is the largest datagram a receiver accepts.
	MaxDatagramSize = 1200
	// ReportBudget is the size encoders keep a report datagram within, so
	// that it fits one QUIC datagram frame at the minimum QUIC packet size.
	ReportBudget = 1100
	// MaxRequestFrame bounds one request or response frame on a stream.
	MaxRequestFrame = 64 << 10
	// MaxBatchFrame bounds one ReportBatch frame between agents.
	MaxBatchFrame = 4 << 20
	// maxIDLen bounds server ids in reports.
	maxIDLen = 256
)

// Reason returns a short label for a decoding error (for metrics).
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrTruncated):
		return "truncated"
	case errors.Is(err, ErrOversized):
		return "oversized"
	case errors.Is(err, ErrWrongVersion):
		return "wrong_version"
	case errors.Is(err, ErrUnknownType):
		return "unknown_type"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	}
	return "other"
}

// EncodeReport encodes r as one datagram of at most budget bytes (0 means
// ReportBudget). When r does not fit, allocation ids are cut first (keeping
// the first ones: list them newest first) and rooms next, and the encoded
// report says truncated with the original lengths. r is not modified.
func EncodeReport(r *transportpb.LoadReport, budget int) ([]byte, error) {
	if budget <= 0 {
		budget = ReportBudget
	}
	if r.GetServerId() == "" || len(r.GetServerId()) > maxIDLen {
		return nil, fmt.Errorf("%w: server id must be 1..%d bytes", ErrMalformed, maxIDLen)
	}
	const hdr = 2
	out := make([]byte, hdr, 256)
	out[0], out[1] = WireVersion, TypeLoadReport
	if hdr+proto.Size(r) <= budget {
		return proto.MarshalOptions{}.MarshalAppend(out, r)
	}
	c := proto.Clone(r).(*transportpb.LoadReport)
	c.Truncated = true
	c.RoomsTotal = uint32(len(r.GetRooms()))
	c.AllocationIdsTotal = uint32(len(r.GetAllocationIds()))
	ids, rooms := c.AllocationIds, c.Rooms
	c.AllocationIds, c.Rooms = nil, nil
	left := budget - hdr - proto.Size(c)
	if left < 0 {
		return nil, fmt.Errorf("%w: report without lists is %d bytes, budget %d", ErrOversized, proto.Size(c)+hdr, budget)
	}
	take := func(list []string) []string {
		n := 0
		for _, s := range list {
			cost := 1 + protowire.SizeBytes(len(s))
			if cost > left {
				break
			}
			left -= cost
			n++
		}
		return list[:n]
	}
	c.AllocationIds = take(ids)
	c.Rooms = take(rooms)
	b, err := proto.MarshalOptions{}.MarshalAppend(out, c)
	if err != nil {
		return nil, fmt.Errorf("encode report: %w", err)
	}
	if len(b) > budget {
		return nil, fmt.Errorf("%w: report is %d bytes after truncation, budget %d", ErrOversized, len(b), budget)
	}
	return b, nil
}

// DecodeDatagram decodes one datagram. It never panics; every error wraps
// one of the package's decoding sentinels.
func DecodeDatagram(b []byte) (*transportpb.LoadReport, error) {
	if len(b) > MaxDatagramSize {
		return nil, fmt.Errorf("%w: datagram of %d bytes, limit %d", ErrOversized, len(b), MaxDatagramSize)
	}
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: datagram of %d bytes has no header", ErrTruncated, len(b))
	}
	if b[0] != WireVersion {
		return nil, fmt.Errorf("%w: datagram version %d, this binary speaks %d", ErrWrongVersion, b[0], WireVersion)
	}
	if b[1] != TypeLoadReport {
		return nil, fmt.Errorf("%w: datagram type %d", ErrUnknownType, b[1])
	}
	r := &transportpb.LoadReport{}
	if err := proto.Unmarshal(b[2:], r); err != nil {
		return nil, fmt.Errorf("%w: load report: %v", ErrMalformed, err)
	}
	if err := ValidReport(r); err != nil {
		return nil, err
	}
	return r, nil
}

// ValidReport checks a decoded load report against the protocol's rules (a
// server id, a sequence number); the error wraps ErrMalformed.
func ValidReport(r *transportpb.LoadReport) error {
	if r.GetServerId() == "" || len(r.GetServerId()) > maxIDLen {
		return fmt.Errorf("%w: load report server id must be 1..%d bytes", ErrMalformed, maxIDLen)
	}
	if r.GetSeq() == 0 {
		return fmt.Errorf("%w: load report seq must be positive", ErrMalformed)
	}
	return nil
}

// WriteFrame writes m as one length-prefixed frame.
func WriteFrame(w io.Writer, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	buf := make([]byte, 4, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	if _, err := w.Write(append(buf, b...)); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// ReadFrame reads one length-prefixed frame of at most max bytes into m.
// A clean end of input before the first byte returns io.EOF; a frame cut
// short returns ErrTruncated (wrapping the read error, e.g. a deadline).
func ReadFrame(r io.Reader, max int, m proto.Message) error {
	var hdr [4]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("%w: frame header: %w", ErrTruncated, err)
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if int64(size) > int64(max) {
		return fmt.Errorf("%w: frame of %d bytes, limit %d", ErrOversized, size, max)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("%w: frame body: %w", ErrTruncated, err)
	}
	return DecodeFrame(b, m)
}

// DecodeFrame decodes one frame body into m. It never panics.
func DecodeFrame(b []byte, m proto.Message) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// RoundTrip sends one request on a new stream of c and reads the answer,
// bounded by ctx and timeout.
func RoundTrip(ctx context.Context, c *quic.Conn, req *transportpb.Request, timeout time.Duration) (*transportpb.Response, error) {
	return roundTrip(ctx, c, req, timeout, nil)
}

// roundTrip is RoundTrip, calling sent (when not nil) once the whole
// request is written and the stream closed for writing, before it waits
// for the answer.
func roundTrip(ctx context.Context, c *quic.Conn, req *transportpb.Request, timeout time.Duration, sent func()) (*transportpb.Response, error) {
	st, err := c.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = st.SetDeadline(deadline)
	// Unblock the stream if ctx ends before the deadline.
	stop := context.AfterFunc(ctx, func() { st.CancelRead(0); st.CancelWrite(0) })
	defer stop()
	if err := WriteFrame(st, req); err != nil {
		st.CancelRead(0)
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, fmt.Errorf("close stream: %w", err)
	}
	if sent != nil {
		sent()
	}
	resp := &transportpb.Response{}
	if err := ReadFrame(st, MaxRequestFrame, resp); err != nil {
		st.CancelRead(0)
		return nil, fmt.Errorf("read response: %w", err)
	}
	return resp, nil
}
