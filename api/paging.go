package api

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// MaxPageLimit caps ?limit= on list endpoints.
const MaxPageLimit = 10000

// MaxIDLen bounds the ids the agents accept (server, request and
// allocation ids) and a server list's id prefix, in bytes.
const MaxIDLen = 128

// DefaultPageSize is the page size Pages and the CLI ask for when the
// caller names none: small enough that no answer is a large body, large
// enough that a fleet of 100,000 servers takes 200 requests.
const DefaultPageSize = 500

// Paging headers of list endpoints: the number of items matching the
// query (before paging), and the cursor of the next page (absent on the
// last page).
const (
	TotalCountHeader = "X-Total-Count"
	NextCursorHeader = "X-Next-Cursor"
)

// PageOptions selects one page of a list (GET /v1/servers,
// /v1/allocations, /v1/rooms, /v1/acl/tokens, /v1/provisioning/intents).
// Items come ordered by their key: the id, or the name for rooms.
type PageOptions struct {
	// Limit is the most items the page holds, 1 to MaxPageLimit; 0 asks
	// for every item after After in one answer.
	Limit int
	// After is a cursor: the page starts with the first item whose key
	// sorts after it (byte-wise). "" starts at the beginning. Pass a
	// page's NextCursor to read the page that follows it.
	After string
}

// Page is one page of a list.
//
// A cursor is the key of the last item of its page, not a position or a
// snapshot: the next page is cut from the list as it stands when that
// page is read. So while the list does not change, the pages together
// hold every item exactly once, in key order. When it changes between
// two pages, an item is still never repeated and an item present
// throughout is never missed, but an item added behind the cursor is not
// seen, one removed after its page was read is still in it, and an item
// shows the state it had when its page was read. For a copy consistent
// at one log index, use Watch (its full copy) or SaveSnapshot.
type Page[T any] struct {
	Items []T
	// Total counts the items matching the query (every page, not just
	// this one) when this page was read; it may differ from page to page
	// while the list changes.
	Total int
	// NextCursor is the After of the next page; "" on the last page.
	NextCursor string
}

// query adds p to q (which may be nil) and returns it.
func (p PageOptions) query(q url.Values) (url.Values, error) {
	if p.Limit < 0 || p.Limit > MaxPageLimit {
		return nil, fmt.Errorf("page limit must be from 1 to %d (0: no limit), got %d", MaxPageLimit, p.Limit)
	}
	if q == nil {
		q = url.Values{}
	}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.After != "" {
		q.Set("after", p.After)
	}
	return q, nil
}

// withHeader is an answer target of do that also keeps the answer's
// headers (those of the attempt that succeeded).
type withHeader struct {
	out    any
	header http.Header
}

// listPage reads one page of the list at path with the query q.
func listPage[T any](ctx context.Context, c *Client, path string, q url.Values, p PageOptions) (Page[T], error) {
	q, err := p.query(q)
	if err != nil {
		return Page[T]{}, err
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var items []T
	wh := &withHeader{out: &items}
	if err := c.do(ctx, "GET", path, nil, wh); err != nil {
		return Page[T]{}, err
	}
	pg := Page[T]{Items: items, Total: len(items), NextCursor: wh.header.Get(NextCursorHeader)}
	if v := wh.header.Get(TotalCountHeader); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return Page[T]{}, fmt.Errorf("GET %s: bad %s header %q", path, TotalCountHeader, v)
		}
		pg.Total = n
	}
	if pg.Items == nil {
		pg.Items = []T{}
	}
	return pg, nil
}

// Pages reads a list page after page, starting at p.After, with p.Limit
// items per page (DefaultPageSize when 0), by calling page (one of the
// Client's ...Page methods, or any function with their contract). It
// yields each page, or an error once and stops; it stops after the last
// page or when the loop breaks. Each page is one request with the
// client's retries: a page that fails is not skipped. Page documents
// what the pages hold when the list changes meanwhile.
//
//	for pg, err := range api.Pages(ctx, api.PageOptions{}, c.AllocationPages(api.AllocationListOptions{ActiveOnly: true})) {
//		if err != nil { return err }
//		for _, a := range pg.Items { ... }
//	}
func Pages[T any](ctx context.Context, p PageOptions, page func(context.Context, PageOptions) (Page[T], error)) iter.Seq2[Page[T], error] {
	if p.Limit == 0 {
		p.Limit = DefaultPageSize
	}
	return func(yield func(Page[T], error) bool) {
		for {
			pg, err := page(ctx, p)
			if err != nil {
				yield(Page[T]{}, err)
				return
			}
			if pg.NextCursor != "" && pg.NextCursor <= p.After {
				yield(Page[T]{}, fmt.Errorf("%w: asked after %q, got next cursor %q", ErrCursorStuck, p.After, pg.NextCursor))
				return
			}
			if !yield(pg, nil) || pg.NextCursor == "" {
				return
			}
			p.After = pg.NextCursor
		}
	}
}

// All reads every page of a list (see Pages) and returns the items, and
// the Total of the last page. The items are not one snapshot: see Page.
func All[T any](ctx context.Context, pageSize int, page func(context.Context, PageOptions) (Page[T], error)) ([]T, int, error) {
	var out []T
	total := 0
	for pg, err := range Pages(ctx, PageOptions{Limit: pageSize}, page) {
		if err != nil {
			return nil, 0, err
		}
		out = append(out, pg.Items...)
		total = pg.Total
	}
	if out == nil {
		out = []T{}
	}
	return out, total, nil
}

// Server states, as Server.State names them and ServerListOptions.States
// filters by them.
const (
	ServerActive   = "active"
	ServerDraining = "draining"
	ServerDown     = "down"
)

// ServerListOptions filters the server list.
type ServerListOptions struct {
	// Stale answers from the contacted agent's replica, not the leader.
	Stale bool
	// States, when not empty, keeps only the servers in one of these
	// states (ServerActive, ServerDraining, ServerDown); the agent
	// refuses an unknown state with ErrInvalid. Page.Total then counts
	// the servers that match.
	States []string
	// Prefix, when not empty, keeps only the servers whose id starts with
	// it (at most MaxIDLen bytes: longer is refused with ErrInvalid).
	Prefix string
}

// values is o as the query of GET /v1/servers.
func (o ServerListOptions) values() url.Values {
	q := staleValues(o.Stale)
	if len(o.States) > 0 {
		q.Set("state", strings.Join(o.States, ","))
	}
	if o.Prefix != "" {
		q.Set("prefix", o.Prefix)
	}
	return q
}

// checkFilter returns ErrFilterIgnored when a server of items is outside
// o's filter, by id prefix or state (an agent that does not know the
// filter answered the whole list).
func checkFilter[T any](o ServerListOptions, items []T, id, state func(T) string) error {
	want := map[string]bool{}
	for _, st := range o.States {
		if st = strings.TrimSpace(st); st != "" {
			want[st] = true
		}
	}
	for _, it := range items {
		if !strings.HasPrefix(id(it), o.Prefix) {
			return fmt.Errorf("%w: asked for servers whose id starts with %q, got %q", ErrFilterIgnored, o.Prefix, id(it))
		}
		if st := state(it); len(want) > 0 && !want[st] {
			return fmt.Errorf("%w: asked for servers in %s, got one %s", ErrFilterIgnored, strings.Join(o.States, ", "), st)
		}
	}
	return nil
}

// ServersPage reads one page of the registered media servers, each with
// the load it last reported as the answering agent holds it (stale: from
// the contacted agent's replica, not the leader).
func (c *Client) ServersPage(ctx context.Context, stale bool, p PageOptions) (Page[ServerWithLoad], error) {
	return c.FilteredServersPage(ctx, ServerListOptions{Stale: stale}, p)
}

// FilteredServersPage is ServersPage for the servers matching o.
func (c *Client) FilteredServersPage(ctx context.Context, o ServerListOptions, p PageOptions) (Page[ServerWithLoad], error) {
	pg, err := listPage[ServerWithLoad](ctx, c, "/v1/servers", o.values(), p)
	if err == nil {
		err = checkFilter(o, pg.Items, func(s ServerWithLoad) string { return s.ID }, func(s ServerWithLoad) string { return s.State })
	}
	return pg, err
}

// ServersRawPage is ServersPage with each server as a raw JSON object
// (keeping any field the agent adds that this package does not know).
func (c *Client) ServersRawPage(ctx context.Context, stale bool, p PageOptions) (Page[map[string]any], error) {
	return c.FilteredServersRawPage(ctx, ServerListOptions{Stale: stale}, p)
}

// FilteredServersRawPage is ServersRawPage for the servers matching o.
func (c *Client) FilteredServersRawPage(ctx context.Context, o ServerListOptions, p PageOptions) (Page[map[string]any], error) {
	pg, err := listPage[map[string]any](ctx, c, "/v1/servers", o.values(), p)
	if err == nil {
		err = checkFilter(o, pg.Items, func(m map[string]any) string { id, _ := m["id"].(string); return id },
			func(m map[string]any) string { st, _ := m["state"].(string); return st })
	}
	return pg, err
}

// AllocationsPage reads one page of the allocations matching o.
func (c *Client) AllocationsPage(ctx context.Context, o AllocationListOptions, p PageOptions) (Page[Allocation], error) {
	return listPage[Allocation](ctx, c, "/v1/allocations", o.values(), p)
}

// RoomsPage reads one page of the placed rooms (all, or those on
// server), ordered by room name.
func (c *Client) RoomsPage(ctx context.Context, server string, stale bool, p PageOptions) (Page[Room], error) {
	q := staleValues(stale)
	if server != "" {
		q.Set("server", server)
	}
	return listPage[Room](ctx, c, "/v1/rooms", q, p)
}

// IntentsPage reads one page of the provisioning intents, ordered by id
// (stale: from the contacted agent's replica, not the leader).
func (c *Client) IntentsPage(ctx context.Context, stale bool, p PageOptions) (Page[Intent], error) {
	return listPage[Intent](ctx, c, "/v1/provisioning/intents", staleValues(stale), p)
}

// ACLTokensPage reads one page of the ACL tokens (never their secrets).
func (c *Client) ACLTokensPage(ctx context.Context, p PageOptions) (Page[ACLToken], error) {
	return listPage[ACLToken](ctx, c, "/v1/acl/tokens", nil, p)
}

// The page functions below bind a list's filters, for Pages and All:
//
//	servers, total, err := api.All(ctx, 0, c.ServerPages(false))

// ServerPages returns ServersPage with stale bound.
func (c *Client) ServerPages(stale bool) func(context.Context, PageOptions) (Page[ServerWithLoad], error) {
	return func(ctx context.Context, p PageOptions) (Page[ServerWithLoad], error) {
		return c.ServersPage(ctx, stale, p)
	}
}

// ServerRawPages returns ServersRawPage with stale bound.
func (c *Client) ServerRawPages(stale bool) func(context.Context, PageOptions) (Page[map[string]any], error) {
	return func(ctx context.Context, p PageOptions) (Page[map[string]any], error) {
		return c.ServersRawPage(ctx, stale, p)
	}
}

// FilteredServerPages returns FilteredServersPage with o bound.
func (c *Client) FilteredServerPages(o ServerListOptions) func(context.Context, PageOptions) (Page[ServerWithLoad], error) {
	return func(ctx context.Context, p PageOptions) (Page[ServerWithLoad], error) {
		return c.FilteredServersPage(ctx, o, p)
	}
}

// FilteredServerRawPages returns FilteredServersRawPage with o bound.
func (c *Client) FilteredServerRawPages(o ServerListOptions) func(context.Context, PageOptions) (Page[map[string]any], error) {
	return func(ctx context.Context, p PageOptions) (Page[map[string]any], error) {
		return c.FilteredServersRawPage(ctx, o, p)
	}
}

// IntentPages returns IntentsPage with stale bound.
func (c *Client) IntentPages(stale bool) func(context.Context, PageOptions) (Page[Intent], error) {
	return func(ctx context.Context, p PageOptions) (Page[Intent], error) {
		return c.IntentsPage(ctx, stale, p)
	}
}

// AllocationPages returns AllocationsPage with o bound.
func (c *Client) AllocationPages(o AllocationListOptions) func(context.Context, PageOptions) (Page[Allocation], error) {
	return func(ctx context.Context, p PageOptions) (Page[Allocation], error) {
		return c.AllocationsPage(ctx, o, p)
	}
}

// RoomPages returns RoomsPage with server and stale bound.
func (c *Client) RoomPages(server string, stale bool) func(context.Context, PageOptions) (Page[Room], error) {
	return func(ctx context.Context, p PageOptions) (Page[Room], error) {
		return c.RoomsPage(ctx, server, stale, p)
	}
}

func staleValues(stale bool) url.Values {
	q := url.Values{}
	if stale {
		q.Set("stale", "true")
	}
	return q
}
