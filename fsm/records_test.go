package fsm

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// TestRecordTableAgreesWithAMap runs random puts, replacements, removals,
// reservations and removing iterations against a record table and a Go
// map, and checks after each step that both hold the same records.
func TestRecordTableAgreesWithAMap(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keys      int // distinct keys drawn from
		ops       int
		byRequest bool
	}{
		{"few keys, many collisions of use", 8, 2_000, false},
		{"by request id", 300, 20_000, true},
		{"grows and shrinks", 5_000, 60_000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.keys)))
			tab := newRecordTable(tc.byRequest)
			model := map[string]*fsmpb.Allocation{}
			rec := func(k string) *fsmpb.Allocation {
				if tc.byRequest {
					return &fsmpb.Allocation{RequestId: k, Id: "other-" + k}
				}
				return &fsmpb.Allocation{Id: k, RequestId: "other-" + k}
			}
			for op := range tc.ops {
				k := fmt.Sprintf("k%d", rng.IntN(tc.keys))
				switch r := rng.IntN(100); {
				case r < 50:
					a := rec(k)
					tab.Put(a)
					model[k] = a
				case r < 90:
					tab.Remove(k)
					delete(model, k)
				case r < 92:
					tab.Reserve(rng.IntN(2 * tc.keys))
				case r < 95:
					// Remove some records and replace others while iterating.
					for a := range tab.All() {
						switch k := tab.key(a); rng.IntN(3) {
						case 0:
							tab.Remove(k)
							delete(model, k)
						case 1:
							b := rec(k)
							tab.Put(b)
							model[k] = b
						}
					}
				}
				if got := tab.Get(k); got != model[k] {
					t.Fatalf("op %d: Get(%s) = %p, want %p", op, k, got, model[k])
				}
				if op%97 == 0 || op == tc.ops-1 {
					checkTable(t, tab, model)
				}
			}
		})
	}
}

func checkTable(t *testing.T, tab *recordTable, model map[string]*fsmpb.Allocation) {
	t.Helper()
	if tab.Len() != len(model) {
		t.Fatalf("Len = %d, want %d", tab.Len(), len(model))
	}
	seen := map[string]bool{}
	for a := range tab.All() {
		k := tab.key(a)
		if seen[k] {
			t.Fatalf("All yields %s twice", k)
		}
		seen[k] = true
		if model[k] != a {
			t.Fatalf("All yields a record for %s the map does not hold", k)
		}
	}
	for k, a := range model {
		if tab.Get(k) != a {
			t.Fatalf("Get(%s) lost its record", k)
		}
	}
	for s := range tab.shards {
		sh := &tab.shards[s]
		used := 0
		for i, c := range sh.ctrl {
			if c != ctrlEmpty {
				used++
			}
			if (c&ctrlFull != 0) != (sh.slots[i] != nil) {
				t.Fatalf("shard %d slot %d: control byte %#x, record %v", s, i, c, sh.slots[i])
			}
		}
		if used != sh.used || (len(sh.slots) > 0 && sh.used*4 > len(sh.slots)*3) {
			t.Fatalf("shard %d: %d of %d slots used, counted %d", s, used, len(sh.slots), sh.used)
		}
	}
}

// TestAllocSet checks a server's set of active allocations against a
// model across the size where it starts and stops keeping positions.
func TestAllocSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 3))
	recs := make([]*fsmpb.Allocation, 3*allocSetIndexAt)
	for i := range recs {
		recs[i] = &fsmpb.Allocation{Id: fmt.Sprint(i)}
	}
	var o allocSet
	in := map[*fsmpb.Allocation]bool{}
	for op := range 20_000 {
		a := recs[rng.IntN(len(recs))]
		// Lean towards growing, then towards shrinking, so the set crosses
		// the indexing threshold both ways.
		grow := (op/2_000)%2 == 0
		if !in[a] && (grow || rng.IntN(4) == 0) {
			o.add(a)
			in[a] = true
		} else if in[a] {
			if n := o.remove(a); n != len(in)-1 {
				t.Fatalf("op %d: remove left %d, want %d", op, n, len(in)-1)
			}
			delete(in, a)
		}
		if len(o.list) != len(in) {
			t.Fatalf("op %d: %d in the set, want %d", op, len(o.list), len(in))
		}
		for i, v := range o.list {
			if !in[v] || slices.Index(o.list, v) != i {
				t.Fatalf("op %d: list holds %s wrongly or twice", op, v.Id)
			}
			if o.pos != nil && o.pos[v] != i {
				t.Fatalf("op %d: position of %s is %d, want %d", op, v.Id, o.pos[v], i)
			}
		}
		if o.pos != nil && len(o.pos) != len(o.list) {
			t.Fatalf("op %d: %d positions for %d records", op, len(o.pos), len(o.list))
		}
	}
	if n := o.remove(&fsmpb.Allocation{}); n != len(in) {
		t.Fatalf("removing a record that is not there left %d, want %d", n, len(in))
	}
}

// TestDecodeAllocationAgreesWithUnmarshal: whenever the fast allocation
// decoder takes a record, proto.Unmarshal takes it too and gives the same
// message; it must take the plain records a state writes.
func TestDecodeAllocationAgreesWithUnmarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	field := func(b []byte) []byte {
		num := protowire.Number(rng.IntN(13)) // 0, the ten fields, unknown ones
		switch rng.IntN(4) {
		case 0:
			b = protowire.AppendTag(b, num, protowire.BytesType)
			s := []byte(fmt.Sprintf("s%d", rng.IntN(1000)))
			if rng.IntN(10) == 0 {
				s = append(s, 0xff) // invalid UTF-8
			}
			return protowire.AppendBytes(b, s)
		case 1:
			b = protowire.AppendTag(b, num, protowire.VarintType)
			return protowire.AppendVarint(b, rng.Uint64()>>rng.IntN(64))
		case 2:
			b = protowire.AppendTag(b, num, protowire.Fixed64Type)
			return protowire.AppendFixed64(b, rng.Uint64())
		default:
			b = protowire.AppendTag(b, num, protowire.Fixed32Type)
			return protowire.AppendFixed32(b, rng.Uint32())
		}
	}
	taken := 0
	for i := range 20_000 {
		var b []byte
		if i%2 == 0 {
			// A record as the state writes it.
			a := &fsmpb.Allocation{Id: fmt.Sprint("a-", i), RequestId: fmt.Sprint("r", i), Room: "room", Server: "m1",
				Units: int64(rng.IntN(5)) - 1, CreatedAtUnixMs: rng.Int64(), State: fsmpb.AllocationState(rng.IntN(4)), EndedAtUnixMs: -rng.Int64()}
			b, _ = proto.Marshal(a)
		}
		for range rng.IntN(6) {
			b = field(b)
		}
		if i%7 == 0 && len(b) > 0 {
			b = b[:rng.IntN(len(b))] // cut short
		}
		got := decodeAllocation(b)
		if got == nil {
			if plainAllocation(b) {
				t.Fatalf("input %d: the fast path declined a plain record % x", i, b)
			}
			continue
		}
		taken++
		want := &fsmpb.Allocation{}
		if err := proto.Unmarshal(b, want); err != nil {
			t.Fatalf("input %d: the fast path took % x, proto.Unmarshal refuses it: %v", i, b, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("input %d: fast path %v, proto.Unmarshal %v", i, got, want)
		}
	}
	if taken < 2_000 {
		t.Fatalf("the fast path took only %d inputs", taken)
	}
}

// plainAllocation reports whether every field of b is one of the ten
// known fields with its declared wire type and strings are valid UTF-8.
func plainAllocation(b []byte) bool {
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[k:])
		if m < 0 {
			return false
		}
		v := b[k : k+m]
		switch {
		case num >= 1 && num <= 5 && typ == protowire.BytesType:
			s, _ := protowire.ConsumeBytes(v)
			if !utf8.Valid(s) {
				return false
			}
		case num >= 6 && num <= 10 && typ == protowire.VarintType:
		default:
			return false
		}
		b = b[k+m:]
	}
	return true
}

// TestServerNamesShared: servers in one region share its name's bytes,
// and a name no server uses any more is forgotten.
func TestServerNamesShared(t *testing.T) {
	s := newState()
	reg := func(id, region, zone string) {
		t.Helper()
		// Copies, as decoded from a log entry.
		in := &fsmpb.Server{Id: id, CapacityUnits: 1, Region: strings.Clone(region), Zone: strings.Clone(zone)}
		if err := s.registerServer(1, in); err != nil {
			t.Fatal(err)
		}
	}
	reg("m1", "eu-west", "a")
	reg("m2", "eu-west", "b")
	reg("m3", "us-east", "a")
	if unsafe.StringData(s.servers["m1"].Region) != unsafe.StringData(s.servers["m2"].Region) ||
		unsafe.StringData(s.servers["m1"].Zone) != unsafe.StringData(s.servers["m3"].Zone) {
		t.Fatal("servers of one region or zone hold copies of its name")
	}
	reg("m3", "ap-south", "") // moves
	if err := s.deregisterServer(&fsmpb.DeregisterServer{Id: "m2"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"eu-west": 1, "a": 1, "ap-south": 1}
	got := map[string]int{}
	for k, r := range s.names {
		got[k] = r.n
	}
	if !maps.Equal(got, want) {
		t.Fatalf("names %v, want %v", got, want)
	}
}

// TestRecordTableReplacingWhileIterating: expire replaces records (end)
// and removes them while it iterates; across table sizes, with and
// without tombstones, every record must be yielded exactly once.
func TestRecordTableReplacingWhileIterating(t *testing.T) {
	for _, tombstones := range []bool{false, true} {
		for n := 1; n <= 3000; n += 7 {
			tab := newRecordTable(false)
			for i := range n + n/3 {
				tab.Put(&fsmpb.Allocation{Id: fmt.Sprint("a-", i)})
			}
			for i := n; i < n+n/3; i++ {
				if tombstones {
					tab.Remove(fmt.Sprint("a-", i))
				}
			}
			want := tab.Len()
			seen := map[string]int{}
			i := 0
			for a := range tab.All() {
				seen[a.Id]++
				if i++; i%5 == 0 {
					tab.Remove(a.Id)
				} else {
					tab.Put(&fsmpb.Allocation{Id: a.Id, State: fsmpb.AllocationState_ALLOCATION_STATE_RELEASED})
				}
			}
			if len(seen) != want {
				t.Fatalf("n=%d tombstones=%v: %d of %d records yielded", n, tombstones, len(seen), want)
			}
			for id, c := range seen {
				if c != 1 {
					t.Fatalf("n=%d tombstones=%v: %s yielded %d times", n, tombstones, id, c)
				}
			}
		}
	}
}
