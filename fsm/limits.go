package fsm

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Input caps. The HTTP API and the QUIC listener check them before anything
// is proposed (Apply does not, so entries already in a log replay as they
// did). Documented in README.md ("Limits").
const (
	// MaxIDLen bounds server ids, request ids, allocation ids and
	// requesters (bytes).
	MaxIDLen = 128
	// MaxRoomLen bounds room names (bytes).
	MaxRoomLen = 256
	// MaxRegionLen bounds regions and zones.
	MaxRegionLen = 64
	// MaxLabels and MaxLabelLen bound a server's labels (count; bytes per
	// key or value).
	MaxLabels   = 32
	MaxLabelLen = 128
	// MaxAddresses and MaxAddressLen bound a server's addresses.
	MaxAddresses  = 16
	MaxAddressLen = 512
	// MaxTTL is the longest allocation ttl_ms accepted (30 days).
	MaxTTL = 30 * 24 * time.Hour
	// MaxTombstoneRetention is the longest tombstone retention a policy
	// may set (30 days).
	MaxTombstoneRetention = 30 * 24 * time.Hour
	// MaxIdleRetire is the longest provisioning idle_retire_ms a policy
	// may set (30 days).
	MaxIdleRetire = 30 * 24 * time.Hour
	// MaxDistances bounds a policy's region distance entries.
	MaxDistances = 1024
	// MaxReasonLen bounds a vacated room's reason (bytes).
	MaxReasonLen = 256
	// MaxCapacityUnits bounds a server's declared capacity.
	MaxCapacityUnits = int64(1) << 40
)

// CheckText refuses a value longer than max bytes, not valid UTF-8, or
// holding control or other non-printable characters. what names the field
// in the error (wrapping ErrInvalid).
func CheckText(what, v string, max int) error {
	if len(v) > max {
		return errorf(ErrInvalid, "%s is %d bytes long, the limit is %d", what, len(v), max)
	}
	if !utf8.ValidString(v) {
		return errorf(ErrInvalid, "%s is not valid UTF-8", what)
	}
	for _, r := range v {
		if !unicode.IsPrint(r) {
			return errorf(ErrInvalid, "%s contains the non-printable character %U", what, r)
		}
	}
	return nil
}

// CheckTTLMs refuses a ttl_ms outside [0, MaxTTL] (before any arithmetic
// on it can overflow).
func CheckTTLMs(ms int64) error {
	if ms < 0 || ms > MaxTTL.Milliseconds() {
		return errorf(ErrInvalid, "ttl_ms must be between 0 (no expiry) and %d (%v), got %d", MaxTTL.Milliseconds(), MaxTTL, ms)
	}
	return nil
}

// CheckAllocateInput checks an allocation request's fields against the caps.
func CheckAllocateInput(requestID, room, requester, region, server string, ttlMs int64) error {
	for _, f := range []struct {
		what, v string
		max     int
	}{{"request_id", requestID, MaxIDLen}, {"room", room, MaxRoomLen}, {"requester", requester, MaxIDLen},
		{"region", region, MaxRegionLen}, {"server", server, MaxIDLen}} {
		if err := CheckText(f.what, f.v, f.max); err != nil {
			return err
		}
	}
	if looksLikeAllocationID(requestID) {
		// Releases and room records name allocations by id, and a lookup
		// by id falls back to request ids: such a request id could be
		// taken for another allocation.
		return errorf(ErrInvalid, "request_id %q has the form of an allocation id (a-<index>-<position>); choose another", requestID)
	}
	return CheckTTLMs(ttlMs)
}

// looksLikeAllocationID reports whether s has the form of the ids Apply
// gives allocations: "a-<digits>-<digits>".
func looksLikeAllocationID(s string) bool {
	rest, ok := strings.CutPrefix(s, "a-")
	if !ok {
		return false
	}
	index, pos, ok := strings.Cut(rest, "-")
	return ok && allDigits(index) && allDigits(pos)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// CheckServerInput checks a server registration against the caps.
func CheckServerInput(s *fsmpb.Server) error {
	if err := CheckText("server id", s.GetId(), MaxIDLen); err != nil {
		return err
	}
	if err := CheckText("region", s.GetRegion(), MaxRegionLen); err != nil {
		return err
	}
	if err := CheckText("zone", s.GetZone(), MaxRegionLen); err != nil {
		return err
	}
	if s.GetCapacityUnits() > MaxCapacityUnits {
		return errorf(ErrInvalid, "capacity %d is above the limit %d", s.GetCapacityUnits(), MaxCapacityUnits)
	}
	if len(s.GetAddresses()) > MaxAddresses {
		return errorf(ErrInvalid, "%d addresses, the limit is %d", len(s.GetAddresses()), MaxAddresses)
	}
	for _, a := range s.GetAddresses() {
		if err := CheckText("address", a, MaxAddressLen); err != nil {
			return err
		}
	}
	if len(s.GetLabels()) > MaxLabels {
		return errorf(ErrInvalid, "%d labels, the limit is %d", len(s.GetLabels()), MaxLabels)
	}
	for k, v := range s.GetLabels() {
		if err := CheckText("label key", k, MaxLabelLen); err != nil {
			return err
		}
		if err := CheckText("label value", v, MaxLabelLen); err != nil {
			return err
		}
	}
	return nil
}

// CheckPolicyInput checks the ranges of a policy's fields that Apply's
// validation leaves open.
func CheckPolicyInput(p *fsmpb.Policy) error {
	if r := p.GetTombstoneRetentionMs(); r < 0 || r > MaxTombstoneRetention.Milliseconds() {
		return errorf(ErrInvalid, "tombstone_retention_ms must be between 0 and %d (%v), got %d", MaxTombstoneRetention.Milliseconds(), MaxTombstoneRetention, r)
	}
	if r := p.GetProvisioning().GetIdleRetireMs(); r < 0 || r > MaxIdleRetire.Milliseconds() {
		return errorf(ErrInvalid, "provisioning idle_retire_ms must be between 0 and %d (%v), got %d", MaxIdleRetire.Milliseconds(), MaxIdleRetire, r)
	}
	if n := len(p.GetDistances()); n > MaxDistances {
		return errorf(ErrInvalid, "policy has %d region distances, the limit is %d", n, MaxDistances)
	}
	for _, d := range p.GetDistances() {
		if err := CheckText("distance region", d.GetFrom(), MaxRegionLen); err != nil {
			return err
		}
		if err := CheckText("distance region", d.GetTo(), MaxRegionLen); err != nil {
			return err
		}
	}
	return nil
}
