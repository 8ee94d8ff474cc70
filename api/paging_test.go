package api_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/pki"
)

// pageFunc is a list's page function with its items reduced to their keys,
// so that one table can drive lists of every type.
type pageFunc = func(context.Context, api.PageOptions) (api.Page[string], error)

func keysOf[T any](page func(context.Context, api.PageOptions) (api.Page[T], error), key func(T) string) pageFunc {
	return func(ctx context.Context, p api.PageOptions) (api.Page[string], error) {
		pg, err := page(ctx, p)
		out := api.Page[string]{Total: pg.Total, NextCursor: pg.NextCursor}
		for _, it := range pg.Items {
			out.Items = append(out.Items, key(it))
		}
		return out, err
	}
}

func oracleOf[T any](list func(context.Context) ([]T, error), key func(T) string) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		items, err := list(ctx)
		var out []string
		for _, it := range items {
			out = append(out, key(it))
		}
		return out, err
	}
}

// TestListPages reads every list endpoint page by page through the SDK,
// against a cluster with ACLs on and the API over HTTPS, with a reader
// token (an operator one for tokens), through every agent and through a
// follower alone: the pages, whatever their size, hold exactly what the
// one-answer list holds, in order, each page says the total, the last has
// no cursor, and a page may start after any cursor.
func TestListPages(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{RaftTLS: true, NoQUIC: true, Mutate: func(_ int, cfg *agent.Config) {
		cfg.ACL, cfg.HTTPS = true, true
	}})
	tc, err := pki.CAClientConfig(c.CA.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	boot, err := c.Client().WithTLS(tc).WithToken("").ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	op := c.Client().WithTLS(tc).WithToken(boot.Secret)
	reader, err := op.ACLCreateToken(ctx, api.CreateTokenRequest{Role: "reader", Description: "pages"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := op.ACLCreateToken(ctx, api.CreateTokenRequest{Role: "allocator", Description: fmt.Sprint("t", i)}); err != nil {
			t.Fatal(err)
		}
	}
	const servers = 23
	for i := range servers {
		if _, err := op.RegisterServer(ctx, api.RegisterServerRequest{ID: fmt.Sprintf("s%02d", i), Capacity: 10, Region: []string{"eu", "us"}[i%2]}); err != nil {
			t.Fatal(err)
		}
		if _, err := op.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("a%02d", i), Room: fmt.Sprint("r", i%2), Units: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 7 {
		if _, err := op.PlaceRoom(ctx, fmt.Sprint("room-", i), api.PlaceRoomRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	// Draining servers for the state filter: every fourth.
	var draining int
	for i := 0; i < servers; i += 4 {
		if _, err := op.DrainServer(ctx, fmt.Sprintf("s%02d", i)); err != nil {
			t.Fatal(err)
		}
		draining++
	}
	// Provisioning intents, put into the state through a snapshot (no
	// provider runs in this cluster).
	const intents = 6
	testcluster.EditState(t, ctx, op, func(st *fsmpb.State) { st.Intents = append(st.Intents, testcluster.FinalIntents(intents)...) })
	c.WaitConverged(30 * time.Second)

	rd := c.Client().WithTLS(tc).WithToken(reader.Secret)
	follower := api.NewClient(c.Followers()[0].Cfg.HTTPAddr).WithTLS(tc).WithToken(reader.Secret)
	serverID := func(s api.ServerWithLoad) string { return s.ID }
	allocID := func(a api.Allocation) string { return a.ID }
	roomName := func(r api.Room) string { return r.Room }
	cases := []struct {
		name   string
		page   pageFunc
		oracle func(context.Context) ([]string, error)
		want   int
	}{
		{"servers", keysOf(rd.ServerPages(false), serverID),
			oracleOf(func(ctx context.Context) ([]api.ServerWithLoad, error) { return rd.ServersWithLoad(ctx, false) }, serverID), servers},
		{"servers raw", keysOf(rd.ServerRawPages(false), func(m map[string]any) string { return m["id"].(string) }),
			oracleOf(func(ctx context.Context) ([]api.ServerWithLoad, error) { return rd.ServersWithLoad(ctx, false) }, serverID), servers},
		{"servers, stale, from a follower", keysOf(follower.ServerPages(true), serverID),
			oracleOf(func(ctx context.Context) ([]api.ServerWithLoad, error) { return follower.ServersWithLoad(ctx, true) }, serverID), servers},
		{"draining servers", keysOf(rd.FilteredServerPages(api.ServerListOptions{States: []string{api.ServerDraining}}), serverID),
			oracleOf(func(ctx context.Context) ([]api.ServerWithLoad, error) {
				return inStates(rd.ServersWithLoad(ctx, false))(api.ServerDraining)
			}, serverID), draining},
		{"active or down servers, raw, stale, from a follower", keysOf(follower.FilteredServerRawPages(api.ServerListOptions{Stale: true, States: []string{api.ServerActive, api.ServerDown}}), func(m map[string]any) string { return m["id"].(string) }),
			oracleOf(func(ctx context.Context) ([]api.ServerWithLoad, error) {
				return inStates(follower.ServersWithLoad(ctx, true))(api.ServerActive, api.ServerDown)
			}, serverID), servers - draining},
		{"intents", keysOf(rd.IntentPages(false), func(it api.Intent) string { return it.ID }),
			oracleOf(func(ctx context.Context) ([]api.Intent, error) { return rd.Intents(ctx, false) }, func(it api.Intent) string { return it.ID }), intents},
		{"intents, stale, from a follower", keysOf(follower.IntentPages(true), func(it api.Intent) string { return it.ID }),
			oracleOf(func(ctx context.Context) ([]api.Intent, error) { return follower.Intents(ctx, true) }, func(it api.Intent) string { return it.ID }), intents},
		{"allocations", keysOf(rd.AllocationPages(api.AllocationListOptions{}), allocID),
			oracleOf(func(ctx context.Context) ([]api.Allocation, error) {
				return rd.Allocations(ctx, api.AllocationListOptions{})
			}, allocID), servers + 7},
		{"allocations of a room, through a follower", keysOf(follower.AllocationPages(api.AllocationListOptions{Room: "r1", ActiveOnly: true}), allocID),
			oracleOf(func(ctx context.Context) ([]api.Allocation, error) {
				return rd.Allocations(ctx, api.AllocationListOptions{Room: "r1", ActiveOnly: true})
			}, allocID), servers / 2},
		{"rooms", keysOf(rd.RoomPages("", false), roomName),
			oracleOf(func(ctx context.Context) ([]api.Room, error) { return rd.Rooms(ctx, "", false) }, roomName), 7},
		{"acl tokens", keysOf(op.ACLTokensPage, func(t api.ACLToken) string { return t.ID }),
			oracleOf(op.ACLTokens, func(t api.ACLToken) string { return t.ID }), 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, err := tc.oracle(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) != tc.want || !slices.IsSorted(want) {
				t.Fatalf("the one-answer list holds %d items (sorted: %v), want %d", len(want), slices.IsSorted(want), tc.want)
			}
			for _, size := range []int{1, 2, 5, tc.want, tc.want + 1, 0} {
				var got []string
				var sizes []int
				for pg, err := range api.Pages(ctx, api.PageOptions{Limit: size}, tc.page) {
					if err != nil {
						t.Fatalf("page size %d after %d items: %v", size, len(got), err)
					}
					if pg.Total != len(want) {
						t.Fatalf("page size %d: total %d, want %d", size, pg.Total, len(want))
					}
					if (pg.NextCursor == "") != (len(got)+len(pg.Items) == len(want)) {
						t.Fatalf("page size %d: cursor %q after %d of %d items", size, pg.NextCursor, len(got)+len(pg.Items), len(want))
					}
					if pg.NextCursor != "" && pg.NextCursor != pg.Items[len(pg.Items)-1] {
						t.Fatalf("page size %d: cursor %q is not the page's last key %q", size, pg.NextCursor, pg.Items[len(pg.Items)-1])
					}
					got = append(got, pg.Items...)
					sizes = append(sizes, len(pg.Items))
				}
				if !slices.Equal(got, want) {
					t.Fatalf("page size %d: pages hold %v, want %v", size, got, want)
				}
				per := size
				if per == 0 {
					per = api.DefaultPageSize
				}
				if wantPages := (len(want) + per - 1) / per; len(sizes) != wantPages || slices.Max(sizes) > per {
					t.Fatalf("page size %d: pages of %v, want %d pages", size, sizes, wantPages)
				}
			}
			all, total, err := api.All(ctx, 3, tc.page)
			if err != nil || total != len(want) || !slices.Equal(all, want) {
				t.Fatalf("All: %v items, total %d, %v", all, total, err)
			}
			// One page: no limit means the rest of the list; a page starts
			// after any cursor, an item's key or not.
			for _, p := range []api.PageOptions{{}, {After: want[1]}, {After: want[1] + "\x00"}, {Limit: 2, After: want[2]}, {After: want[len(want)-1]}} {
				pg, err := tc.page(ctx, p)
				if err != nil {
					t.Fatalf("%+v: %v", p, err)
				}
				rest := want[min(len(want), 2):]
				switch {
				case p.After == "":
					rest = want
				case p.After == want[2]:
					rest = want[3:5]
				case p.After == want[len(want)-1]:
					rest = nil
				}
				if !slices.Equal(pg.Items, rest) || pg.Total != len(want) {
					t.Fatalf("%+v: %v (total %d), want %v", p, pg.Items, pg.Total, rest)
				}
			}
			for _, bad := range []int{-1, api.MaxPageLimit + 1} {
				if _, err := tc.page(ctx, api.PageOptions{Limit: bad}); err == nil {
					t.Fatalf("limit %d accepted", bad)
				}
			}
		})
	}

	t.Run("an unknown server state is refused", func(t *testing.T) {
		_, err := rd.FilteredServersPage(ctx, api.ServerListOptions{States: []string{"sleeping"}}, api.PageOptions{})
		if !errors.Is(err, errcode.ErrInvalid) || !strings.Contains(err.Error(), "active, draining, down") {
			t.Fatalf("state sleeping: %v", err)
		}
	})

	t.Run("a reader may not list tokens", func(t *testing.T) {
		if _, err := rd.ACLTokensPage(ctx, api.PageOptions{Limit: 1}); !errors.Is(err, errcode.ErrPermissionDenied) {
			t.Fatalf("reader listing tokens: %v", err)
		}
	})

	// The list changes between pages: an item added behind the cursor is
	// not seen, one added ahead is, none is repeated and none present
	// throughout is missed.
	t.Run("servers registered while paging", func(t *testing.T) {
		var got []string
		first := true
		for pg, err := range api.Pages(ctx, api.PageOptions{Limit: 5}, rd.ServerPages(false)) {
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range pg.Items {
				got = append(got, s.ID)
			}
			if first {
				first = false
				for _, id := range []string{"s00a", "s99"} {
					if _, err := op.RegisterServer(ctx, api.RegisterServerRequest{ID: id, Capacity: 1}); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		var want []string
		for i := range servers {
			want = append(want, fmt.Sprintf("s%02d", i))
		}
		want = append(want, "s99")
		if !slices.Equal(got, want) {
			t.Fatalf("pages hold %v, want %v", got, want)
		}
	})
}

// Pages stops when the loop breaks, and refuses a list whose cursor does
// not advance instead of asking for the same page forever.
func TestPagesStops(t *testing.T) {
	ctx := context.Background()
	calls := 0
	endless := func(_ context.Context, p api.PageOptions) (api.Page[int], error) {
		calls++
		return api.Page[int]{Items: []int{calls}, Total: 1 << 30, NextCursor: fmt.Sprintf("%08d", calls)}, nil
	}
	n := 0
	for _, err := range api.Pages(ctx, api.PageOptions{}, endless) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 3 {
			break
		}
	}
	if calls != 3 {
		t.Fatalf("%d pages read for 3 consumed", calls)
	}
	stuck := func(_ context.Context, p api.PageOptions) (api.Page[int], error) {
		return api.Page[int]{Items: []int{1}, Total: 2, NextCursor: "same"}, nil
	}
	var last error
	pages := 0
	for _, err := range api.Pages(ctx, api.PageOptions{}, stuck) {
		pages++
		last = err
	}
	if pages != 2 || !errors.Is(last, api.ErrCursorStuck) {
		t.Fatalf("%d pages, last error %v; want the second to fail with ErrCursorStuck", pages, last)
	}
	failing := func(_ context.Context, p api.PageOptions) (api.Page[int], error) {
		return api.Page[int]{}, errcode.ErrNoLeader
	}
	if _, _, err := api.All(ctx, 10, failing); !errors.Is(err, errcode.ErrNoLeader) {
		t.Fatalf("All over a failing list: %v", err)
	}
}

// inStates returns a filter of the servers a one-answer list returned:
// those in one of the states given.
func inStates(all []api.ServerWithLoad, err error) func(states ...string) ([]api.ServerWithLoad, error) {
	return func(states ...string) ([]api.ServerWithLoad, error) {
		var out []api.ServerWithLoad
		for _, s := range all {
			if slices.Contains(states, s.State) {
				out = append(out, s)
			}
		}
		return out, err
	}
}
