package fsm

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// The snapshot format is one protobuf State message. A fleet-sized state
// (100,000 servers, 1,000,000 allocations: ~64 MB) is mostly its two large
// repeated fields, so both directions split them into chunks and encode or
// decode the chunks on every core, in order, while the stream is written
// or read. The bytes stay a plain State: protobuf allows a message's fields
// in any order and a repeated field's elements spread over several runs, so
// any release that reads a State reads these snapshots, and any State
// reads here as it would through proto.Unmarshal.

// Field numbers of State's large repeated fields (proto/switchyard/v1/fsm.proto).
const (
	stateServersField     = 3
	stateAllocationsField = 4
)

// codecChunk is how many bytes of raw servers and allocations one decoding
// task gets, and recordsPerChunk how many records one encoding task
// marshals: large enough that scheduling costs nothing next to the work,
// small enough that every core gets many.
const (
	codecChunk      = 1 << 20
	recordsPerChunk = 8192
)

// ReadState decodes a snapshot stream into a State, as proto.Unmarshal
// of the whole stream would (same result, same refusals: malformed input
// is ErrInvalid, another version ErrUnsupportedVersion), but streaming:
// the servers and allocations are decoded on every core while the rest
// of the stream is still being read. Errors of r itself are returned
// wrapped, not as ErrInvalid.
func ReadState(r io.Reader) (*fsmpb.State, error) {
	var servers []*fsmpb.Server
	var allocs []*fsmpb.Allocation
	st, err := decodeState(r, func(part *fsmpb.State) {
		servers = append(servers, part.Servers...)
		allocs = append(allocs, part.Allocations...)
	})
	if err != nil {
		return nil, err
	}
	st.Servers, st.Allocations = servers, allocs
	return st, nil
}

// decodeState reads a snapshot stream. Its servers and allocations are
// decoded in chunks on every core and handed to parts in stream order,
// from one goroutine, as soon as a chunk and all before it are decoded;
// the State returned holds every other field. parts may have been called
// when an error is returned.
func decodeState(r io.Reader, parts func(*fsmpb.State)) (*fsmpb.State, error) {
	src := &errReader{r: r}
	dec := newChunkDecoder(parts)
	rest, err := scanFields(src, dec.add)
	decErr := dec.wait()
	switch {
	case src.err != nil:
		return nil, fmt.Errorf("read snapshot: %w", src.err)
	case err != nil:
		return nil, fmt.Errorf("%w: decode snapshot: %v", ErrInvalid, err)
	case decErr != nil:
		return nil, fmt.Errorf("%w: decode snapshot: %v", ErrInvalid, decErr)
	}
	st := &fsmpb.State{}
	if err := proto.Unmarshal(rest, st); err != nil {
		return nil, fmt.Errorf("%w: decode snapshot: %v", ErrInvalid, err)
	}
	if st.GetVersion() != StateVersion {
		return nil, fmt.Errorf("%w: snapshot version %d, this binary reads %d", ErrUnsupportedVersion, st.GetVersion(), StateVersion)
	}
	return st, nil
}

// scanFields splits a State's encoding, read from r, at its top-level
// fields: runs of server and allocation fields go to chunk (about
// codecChunk bytes each, raw, tags included), every other field is
// returned raw in stream order. It reads r in blocks and copies each
// field once; a field is only held whole once all of it has arrived, so
// a corrupt length costs what the stream holds, not what it says.
func scanFields(r io.Reader, chunk func([]byte)) (rest []byte, err error) {
	buf := make([]byte, 0, 64<<10)
	var records []byte
	eof := false
	for {
		off := 0
		for off < len(buf) {
			b := buf[off:]
			num, typ, n := protowire.ConsumeTag(b)
			if n >= 0 {
				if m := protowire.ConsumeFieldValue(num, typ, b[n:]); m < 0 {
					n = m
				} else {
					n += m
				}
			}
			if n < 0 {
				perr := protowire.ParseError(n)
				if !errors.Is(perr, io.ErrUnexpectedEOF) || eof {
					return nil, perr
				}
				break // the field continues in the next block
			}
			if typ == protowire.BytesType && (num == stateServersField || num == stateAllocationsField) {
				records = append(records, b[:n]...)
				if len(records) >= codecChunk {
					chunk(records)
					records = nil
				}
			} else {
				rest = append(rest, b[:n]...)
			}
			off += n
		}
		if eof {
			break
		}
		// Keep the unfinished field, grow only if it fills the buffer,
		// and read the next block after it.
		buf = buf[:copy(buf, buf[off:])]
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
		n, rerr := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF):
			eof = true
		case rerr != nil:
			return nil, rerr
		}
	}
	if len(records) > 0 {
		chunk(records)
	}
	return rest, nil
}

// errReader remembers the first error of the underlying reader other
// than io.EOF, so that a failing source is told apart from a truncated
// snapshot.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && e.err == nil {
		e.err = err
	}
	return n, err
}

// chunkDecoder unmarshals chunks of raw State fields on every core and
// hands the decoded chunks to deliver in the order they were added.
type chunkDecoder struct {
	work    chan *decodeTask
	ordered chan *decodeTask
	deliver func(*fsmpb.State)
	workers sync.WaitGroup
	done    chan struct{}
	err     error // the first decoding error, read after done
}

type decodeTask struct {
	raw     []byte
	st      fsmpb.State
	err     error
	decoded chan struct{}
}

func newChunkDecoder(deliver func(*fsmpb.State)) *chunkDecoder {
	procs := runtime.GOMAXPROCS(0)
	d := &chunkDecoder{
		work:    make(chan *decodeTask, procs),
		ordered: make(chan *decodeTask, 2*procs),
		deliver: deliver,
		done:    make(chan struct{}),
	}
	for range procs {
		d.workers.Go(func() {
			for t := range d.work {
				t.err = decodeRecords(t.raw, &t.st)
				t.raw = nil
				close(t.decoded)
			}
		})
	}
	go func() {
		defer close(d.done)
		for t := range d.ordered {
			<-t.decoded
			if t.err != nil && d.err == nil {
				d.err = t.err
			}
			if d.err == nil {
				d.deliver(&t.st)
			}
		}
	}()
	return d
}

// decodeRecords decodes a run of State's server and allocation fields
// (what scanFields passes on) into st, as proto.Unmarshal would. An
// allocation made only of its known fields, each of its declared type,
// with valid UTF-8 strings, takes decodeAllocation's fast path; anything
// else (unknown or mistyped fields, malformed bytes) goes through
// proto.Unmarshal, which decides what it means or refuses it.
func decodeRecords(raw []byte, st *fsmpb.State) error {
	whole := raw
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 || typ != protowire.BytesType {
			return proto.Unmarshal(whole, st) // resets st first
		}
		v, m := protowire.ConsumeBytes(raw[n:])
		if m < 0 {
			return proto.Unmarshal(whole, st)
		}
		switch num {
		case stateAllocationsField:
			if a := decodeAllocation(v); a != nil {
				st.Allocations = append(st.Allocations, a)
				break
			}
			a := &fsmpb.Allocation{}
			if err := proto.Unmarshal(v, a); err != nil {
				return err
			}
			st.Allocations = append(st.Allocations, a)
		case stateServersField:
			srv := &fsmpb.Server{}
			if err := proto.Unmarshal(v, srv); err != nil {
				return err
			}
			st.Servers = append(st.Servers, srv)
		default:
			return proto.Unmarshal(whole, st)
		}
		raw = raw[n+m:]
	}
	return nil
}

// decodeAllocation decodes an Allocation made only of its known fields
// with their declared wire types (repeated ones: the last wins, as in
// proto.Unmarshal) and valid UTF-8 strings, or returns nil for anything
// else. Its five strings share one allocation: a record costs two
// allocations instead of six, which is most of what restoring a million
// of them spends in the allocator and the garbage collector.
func decodeAllocation(b []byte) *fsmpb.Allocation {
	var strs [5][]byte // id, request_id, room, requester, server
	var ints [11]uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		switch {
		case num >= 1 && num <= 5 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 || !utf8.Valid(v) { // every occurrence, as proto.Unmarshal checks
				return nil
			}
			strs[num-1], b = v, b[m:]
		case num >= 6 && num <= 10 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return nil
			}
			ints[num], b = v, b[m:]
		default:
			return nil
		}
	}
	total := 0
	for _, v := range strs {
		total += len(v)
	}
	var block strings.Builder
	block.Grow(total)
	for _, v := range strs {
		block.Write(v)
	}
	all := block.String()
	var out [5]string
	off := 0
	for i, v := range strs {
		out[i] = all[off : off+len(v)]
		off += len(v)
	}
	return &fsmpb.Allocation{
		Id:              out[0],
		RequestId:       out[1],
		Room:            out[2],
		Requester:       out[3],
		Server:          out[4],
		Units:           int64(ints[6]),
		CreatedAtUnixMs: int64(ints[7]),
		ExpiresAtUnixMs: int64(ints[8]),
		State:           fsmpb.AllocationState(int32(ints[9])),
		EndedAtUnixMs:   int64(ints[10]),
	}
}

// add queues a chunk; it blocks while the decoders are that far behind.
func (d *chunkDecoder) add(raw []byte) {
	t := &decodeTask{raw: raw, decoded: make(chan struct{})}
	d.ordered <- t
	d.work <- t
}

// wait returns once every chunk added is decoded and delivered (or the
// first decoding error).
func (d *chunkDecoder) wait() error {
	close(d.work)
	close(d.ordered)
	<-d.done
	d.workers.Wait()
	return d.err
}

// WriteState encodes st in the snapshot format: its other fields first,
// then its servers and allocations in chunks marshalled on every core and
// written in order. The bytes are deterministic for a given st, which is
// only read.
func WriteState(w io.Writer, st *fsmpb.State) error {
	opts := proto.MarshalOptions{Deterministic: true}
	b, err := opts.Marshal(withoutRecords(st))
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	var chunks []*fsmpb.State
	servers, allocs := st.GetServers(), st.GetAllocations()
	for i := 0; i < len(servers); i += recordsPerChunk {
		chunks = append(chunks, &fsmpb.State{Servers: servers[i:min(i+recordsPerChunk, len(servers))]})
	}
	for i := 0; i < len(allocs); i += recordsPerChunk {
		chunks = append(chunks, &fsmpb.State{Allocations: allocs[i:min(i+recordsPerChunk, len(allocs))]})
	}
	type result struct {
		b   []byte
		err error
	}
	results := make([]chan result, len(chunks))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	// Encoders run at most GOMAXPROCS+1 chunks ahead of the writer. On an
	// error the writer stops them and waits until none reads st.
	ahead := make(chan struct{}, runtime.GOMAXPROCS(0)+1)
	stop := make(chan struct{})
	var encoders sync.WaitGroup
	defer func() {
		close(stop)
		encoders.Wait()
	}()
	encoders.Go(func() {
		for i, part := range chunks {
			select {
			case <-stop:
				return
			case ahead <- struct{}{}:
			}
			select {
			case <-stop:
				return
			default:
			}
			encoders.Go(func() {
				b, err := opts.Marshal(part)
				results[i] <- result{b, err}
			})
		}
	})
	for _, ch := range results {
		r := <-ch
		<-ahead
		if r.err != nil {
			return fmt.Errorf("encode snapshot: %w", r.err)
		}
		if _, err := w.Write(r.b); err != nil {
			return err
		}
	}
	return nil
}

// withoutRecords returns a State with st's fields except its servers and
// allocations, sharing them with st.
func withoutRecords(st *fsmpb.State) *fsmpb.State {
	head := &fsmpb.State{}
	src, dst := st.ProtoReflect(), head.ProtoReflect()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if n := fd.Number(); n != stateServersField && n != stateAllocationsField {
			dst.Set(fd, v)
		}
		return true
	})
	dst.SetUnknown(src.GetUnknown())
	return head
}
