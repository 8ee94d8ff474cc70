package fsm

import (
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Committed refusals. A momentary refusal (errcode.Entry.Momentary: no free
// capacity, the server not active) depends on the moment it was decided; a
// copy of the same request that reaches the leader later could be granted
// after the caller was told no. The leader therefore commits such a
// refusal (a RefuseAllocation command, or an allocate decision with
// record_refusal that the hard limits refuse), and from then on every copy
// of the request id gets the same answer, for RefusalRetention of leader
// time. A request pinned to a server that is not registered (not_found)
// is committed the same way (Committable): the server may register before
// a late copy arrives.

const (
	// RefusalRetention is how long a committed refusal answers later
	// copies of its request id.
	RefusalRetention = time.Minute
	// MaxRefusals bounds the refusals kept; beyond it the oldest are
	// forgotten first, even before RefusalRetention (a flood of refused
	// requests cannot grow the state without bound: at most ~500 B each,
	// see MaxRefusalMessage).
	MaxRefusals = 100_000
	// MaxRefusalMessage bounds the message a refusal keeps (bytes): a
	// "no server fits" explanation can name thousands of servers.
	MaxRefusalMessage = 256
)

// RefusalMessage is msg as a committed refusal keeps it: cut to
// MaxRefusalMessage bytes at a character boundary, ending in "…" when cut.
// The leader cuts what it proposes; Apply cuts what it records, so every
// copy of the request gets the same words.
func RefusalMessage(msg string) string {
	if len(msg) <= MaxRefusalMessage {
		return msg
	}
	const ell = "…"
	cut := MaxRefusalMessage - len(ell)
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + ell
}

// refusals holds the committed refusals by request id and in the order
// they were made (leader time never goes backwards in the state, so that
// order is also their expiry order).
type refusals struct {
	byID  map[string]*fsmpb.Refusal
	order []*fsmpb.Refusal // oldest first; order[head:] are live
	head  int
}

func (r *refusals) get(id string) (*fsmpb.Refusal, bool) {
	v, ok := r.byID[id]
	return v, ok
}

func (r *refusals) has(id string) bool {
	_, ok := r.byID[id]
	return ok
}

func (r *refusals) add(v *fsmpb.Refusal) {
	if r.byID == nil {
		r.byID = map[string]*fsmpb.Refusal{}
	}
	r.byID[v.RequestId] = v
	r.order = append(r.order, v)
	for len(r.byID) > MaxRefusals {
		r.dropOldest()
	}
}

func (r *refusals) dropOldest() {
	v := r.order[r.head]
	r.order[r.head] = nil
	r.head++
	delete(r.byID, v.RequestId)
	if r.head > len(r.order)/2 && r.head > 1024 {
		r.order = append([]*fsmpb.Refusal(nil), r.order[r.head:]...)
		r.head = 0
	}
}

// due reports whether expire(now) would forget a refusal.
func (r *refusals) due(now int64) bool {
	return r.head < len(r.order) && r.order[r.head].RefusedAtUnixMs+RefusalRetention.Milliseconds() <= now
}

// expire forgets the refusals made RefusalRetention or more before now.
func (r *refusals) expire(now int64) {
	for r.due(now) {
		r.dropOldest()
	}
	if r.head == len(r.order) {
		r.order, r.head = nil, 0
	}
}

// refusalErr is the answer a committed refusal gives every copy of its
// request.
func refusalErr(v *fsmpb.Refusal) error {
	return errcode.FromCode(v.GetErrorCode(), v.GetErrorMessage())
}

// Committable reports whether a refusal with code may be committed: a
// momentary one (errcode.Momentary), or not_found, which the leader
// commits for a request pinned to a server that is not registered (the
// server may register before a late copy of the request arrives).
func Committable(code string) bool {
	return errcode.Momentary(code) || code == errcode.Code(ErrNotFound)
}

// refuse applies a RefuseAllocation command: the leader found no place for
// the request. A request id already granted keeps its grant, one already
// refused its first refusal; a code that is not Committable is invalid
// (only those refusals need committing) and records nothing.
func (s *state) refuse(now int64, v *fsmpb.Refusal) (*fsmpb.Allocation, bool, error) {
	if v.GetRequestId() == "" {
		return nil, false, errorf(ErrInvalid, "request id is required")
	}
	if a := s.byRequest.Get(v.GetRequestId()); a != nil {
		return proto.Clone(a).(*fsmpb.Allocation), true, nil
	}
	if old, ok := s.refused.get(v.GetRequestId()); ok {
		return nil, true, refusalErr(old)
	}
	if !Committable(v.GetErrorCode()) {
		return nil, false, errorf(ErrInvalid, "a committed refusal needs a momentary code or not_found, not %q", v.GetErrorCode())
	}
	return nil, false, refusalErr(s.recordRefusal(now, v.GetRequestId(), v.GetErrorCode(), v.GetErrorMessage()))
}

// recordRefusal commits a refusal of requestID at now (a Committable
// code), its message cut by RefusalMessage, and returns it.
func (s *state) recordRefusal(now int64, requestID, code, msg string) *fsmpb.Refusal {
	v := &fsmpb.Refusal{RequestId: requestID, ErrorCode: code, ErrorMessage: RefusalMessage(msg), RefusedAtUnixMs: now}
	s.refused.add(v)
	return v
}

// exportRefusals lists the refusals, oldest first, sharing the records:
// like allocation records they are never changed once stored (see
// exportShared).
func (s *state) exportRefusals(st *fsmpb.State) {
	st.Refusals = append(st.Refusals, s.refused.order[s.refused.head:]...)
}

// importRefusals takes over st's refusal records (see importer).
func (s *state) importRefusals(st *fsmpb.State) {
	for _, v := range st.GetRefusals() {
		s.refused.add(v)
	}
}

// validateRefusals checks a snapshot's refusals: at most MaxRefusals, each
// with a request id no allocation and no other refusal has, a Committable
// code, oldest first. granted holds the allocations' request ids.
func validateRefusals(st *fsmpb.State, granted map[string]bool) error {
	rs := st.GetRefusals()
	if len(rs) > MaxRefusals {
		return errorf(ErrInvalid, "snapshot: %d refusals, at most %d are kept", len(rs), MaxRefusals)
	}
	seen := make(map[string]bool, len(rs))
	for i, v := range rs {
		if v.GetRequestId() == "" || seen[v.GetRequestId()] || granted[v.GetRequestId()] {
			return errorf(ErrInvalid, "snapshot: refusal %d has an empty, repeated or granted request id %q", i, v.GetRequestId())
		}
		seen[v.GetRequestId()] = true
		if !Committable(v.GetErrorCode()) || len(v.GetErrorMessage()) > MaxRefusalMessage {
			return errorf(ErrInvalid, "snapshot: refusal of %q has code %q (momentary ones and not_found only) and a %d-byte message (at most %d)",
				v.GetRequestId(), v.GetErrorCode(), len(v.GetErrorMessage()), MaxRefusalMessage)
		}
		if i > 0 && v.GetRefusedAtUnixMs() < rs[i-1].GetRefusedAtUnixMs() {
			return errorf(ErrInvalid, "snapshot: refusals are not oldest first at %q", v.GetRequestId())
		}
	}
	return nil
}
