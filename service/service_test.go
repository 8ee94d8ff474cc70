package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/transport"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// badCase is one malformed or refused request, expressed once and sent
// over both front ends.
type badCase struct {
	name     string
	wantCode string
	alloc    *api.AllocateRequest
	register *api.RegisterServerRequest
	drain    string
	release  string
}

// target names the media certificate the case is sent with over QUIC: the
// server id it registers or drains, else any name (allocations and
// releases target no server).
func (c badCase) target() string {
	switch {
	case c.register != nil:
		return c.register.ID
	case c.drain != "":
		return c.drain
	}
	return "bad-input-tester"
}

func badCases() []badCase {
	long := func(n int) string { return strings.Repeat("x", n) }
	labels := map[string]string{}
	for i := 0; i < 33; i++ {
		labels[fmt.Sprintf("k%d", i)] = "v"
	}
	addrs := make([]string, 17)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("http://10.0.0.%d:8080", i)
	}
	return []badCase{
		{name: "allocate without request id", wantCode: "invalid_argument", alloc: &api.AllocateRequest{Room: "r", Units: 1}},
		{name: "allocate request id over cap", wantCode: "invalid_argument", alloc: &api.AllocateRequest{RequestID: long(129), Room: "r", Units: 1}},
		{name: "allocate room over cap", wantCode: "invalid_argument", alloc: &api.AllocateRequest{RequestID: "q1", Room: long(257), Units: 1}},
		{name: "allocate requester with control character", wantCode: "invalid_argument", alloc: &api.AllocateRequest{RequestID: "q2", Room: "r", Units: 1, Requester: "a\x01b"}},
		{name: "allocate region over cap", wantCode: "invalid_argument", alloc: &api.AllocateRequest{RequestID: "q3", Room: "r", Units: 1, Region: long(65)}},
		{name: "allocate negative ttl", wantCode: "invalid_argument", alloc: &api.AllocateRequest{RequestID: "q4", Room: "r", Units: 1, TTLMs: -1}},
		{name: "allocate ttl that would overflow", wantCode: "invalid_argument", alloc: &api.AllocateRequest{RequestID: "q5", Room: "r", Units: 1, TTLMs: 18446744073719}},
		{name: "allocate zero units", wantCode: "invalid_argument", alloc: &api.AllocateRequest{RequestID: "q6", Room: "r", Units: 0}},
		{name: "allocate negative units", wantCode: "invalid_argument", alloc: &api.AllocateRequest{RequestID: "q7", Room: "r", Units: -3}},
		{name: "allocate more than any server has", wantCode: "insufficient_capacity", alloc: &api.AllocateRequest{RequestID: "q8", Room: "r", Units: 1000}},
		{name: "allocate pinned to an unknown server", wantCode: "not_found", alloc: &api.AllocateRequest{RequestID: "q9", Room: "r", Units: 1, Server: "nope"}},
		{name: "register without id", wantCode: "invalid_argument", register: &api.RegisterServerRequest{Capacity: 1}},
		{name: "register id over cap", wantCode: "invalid_argument", register: &api.RegisterServerRequest{ID: long(129), Capacity: 1}},
		{name: "register id with control character", wantCode: "invalid_argument", register: &api.RegisterServerRequest{ID: "m\x1b[2J", Capacity: 1}},
		{name: "register too many labels", wantCode: "invalid_argument", register: &api.RegisterServerRequest{ID: "m-labels", Capacity: 1, Labels: labels}},
		{name: "register too many addresses", wantCode: "invalid_argument", register: &api.RegisterServerRequest{ID: "m-addrs", Capacity: 1, Addresses: addrs}},
		{name: "register negative capacity", wantCode: "invalid_argument", register: &api.RegisterServerRequest{ID: "m-neg", Capacity: -1}},
		{name: "drain unknown server", wantCode: "not_found", drain: "nope"},
		{name: "drain id over cap", wantCode: "invalid_argument", drain: long(129)},
		{name: "release unknown allocation", wantCode: "not_found", release: "nope"},
		{name: "release id with control character", wantCode: "invalid_argument", release: "a\x07"},
	}
}

// refusal is what either front end answered.
type refusal struct{ code, msg string }

// viaHTTP sends c to the agent at addr with token (an operator's: the
// refusal is the input's, not the credential's).
func viaHTTP(ctx context.Context, addr, token string, c badCase) (refusal, error) {
	var method, path string
	var body any
	switch {
	case c.alloc != nil:
		method, path, body = http.MethodPost, "/v1/allocations", c.alloc
	case c.register != nil:
		method, path, body = http.MethodPost, "/v1/servers", c.register
	case c.drain != "":
		method, path = http.MethodPost, "/v1/servers/"+url.PathEscape(c.drain)+"/drain"
	default:
		method, path = http.MethodDelete, "/v1/allocations/"+url.PathEscape(c.release)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return refusal{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return refusal{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return refusal{}, err
	}
	defer resp.Body.Close()
	var e api.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return refusal{}, fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	if resp.StatusCode < 400 {
		return refusal{}, fmt.Errorf("HTTP %d: accepted", resp.StatusCode)
	}
	return refusal{e.Code, e.Error}, nil
}

func viaQUIC(ctx context.Context, conn *quic.Conn, c badCase) (refusal, error) {
	req := &transportpb.Request{Version: transport.RequestVersion}
	switch {
	case c.alloc != nil:
		a := c.alloc
		req.Body = &transportpb.Request_Allocate{Allocate: &transportpb.AllocateRequest{RequestId: a.RequestID, Room: a.Room, Units: a.Units,
			Requester: a.Requester, Region: a.Region, Server: a.Server, TtlMs: a.TTLMs}}
	case c.register != nil:
		r := c.register
		req.Body = &transportpb.Request_Register{Register: &transportpb.RegisterRequest{Server: &fsmpb.Server{Id: r.ID, Addresses: r.Addresses,
			Region: r.Region, Zone: r.Zone, Labels: r.Labels, CapacityUnits: r.Capacity, Incarnation: r.Incarnation}}}
	case c.drain != "":
		req.Body = &transportpb.Request_Drain{Drain: &transportpb.DrainRequest{ServerId: c.drain}}
	default:
		req.Body = &transportpb.Request_Release{Release: &transportpb.ReleaseRequest{Id: c.release}}
	}
	resp, err := transport.RoundTrip(ctx, conn, req, 20*time.Second)
	if err != nil {
		return refusal{}, err
	}
	if resp.GetErrorCode() == "" {
		return refusal{}, fmt.Errorf("accepted: %v", resp)
	}
	return refusal{resp.GetErrorCode(), resp.GetErrorMessage()}, nil
}

// The same malformed or refused request gets the same code and message
// over HTTP and over QUIC, sent to the leader or to a follower (which
// forwards it), and changes nothing.
func TestBadInputSameOverHTTPAndQUIC(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.WaitLeader(30 * time.Second)
	c.WaitFeature(cluster.FeatureCommittedRefusals, 30*time.Second)
	c.WaitConverged(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Client().RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 10, Addresses: []string{"http://127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	before := hashBesidesRefusals(leader)
	targets := []*testcluster.Node{leader, c.Followers()[0]}
	for _, nd := range targets {
		role := "leader"
		if nd != leader {
			role = "follower"
		}
		for _, bc := range badCases() {
			t.Run(role+"/"+bc.name, func(t *testing.T) {
				h, err := viaHTTP(ctx, nd.Agent.HTTPAddr(), c.Token, bc)
				if err != nil {
					t.Fatalf("HTTP: %v", err)
				}
				// Over QUIC the case is sent with a media certificate
				// naming the server it registers or drains (agents take a
				// media server's requests only from its own certificate).
				// No certificate names the empty id: that request is
				// refused before it is looked at.
				name, noName := bc.target(), false
				if name == "" {
					name, noName = "bad-input-tester", true
				}
				conn, err := quic.DialAddr(ctx, nd.Agent.QUIC.Addr().String(), c.Identity(name).ClientConfig(transport.ALPN), &quic.Config{EnableDatagrams: true})
				if err != nil {
					t.Fatalf("dial %s: %v", nd.ID, err)
				}
				defer func() { _ = conn.CloseWithError(0, "") }()
				q, err := viaQUIC(ctx, conn, bc)
				if err != nil {
					t.Fatalf("QUIC: %v", err)
				}
				t.Logf("%s: %s", h.code, h.msg)
				if noName {
					if q.code != "permission_denied" {
						t.Fatalf("QUIC answered %q %q, want permission_denied", q.code, q.msg)
					}
				} else if h != q {
					t.Fatalf("HTTP answered %q %q; QUIC %q %q", h.code, h.msg, q.code, q.msg)
				}
				if h.code != bc.wantCode {
					t.Fatalf("code %q (%s), want %q", h.code, h.msg, bc.wantCode)
				}
			})
		}
	}
	if after := hashBesidesRefusals(leader); after != before {
		t.Fatalf("refused requests changed the state: hash %s -> %s", before, after)
	}
	// The refusal for want of capacity and the one pinned to a server that
	// is not registered were committed (so that a late copy meets them
	// too), and nothing else was.
	var refused []string
	for _, r := range leader.Agent.Node.FSM().Export().GetRefusals() {
		refused = append(refused, r.GetRequestId()+" "+r.GetErrorCode())
	}
	if want := []string{"q8 insufficient_capacity", "q9 not_found"}; !slices.Equal(refused, want) {
		t.Fatalf("committed refusals %q, want %q", refused, want)
	}
}

// hashBesidesRefusals is the leader's state hash leaving out its committed
// refusals.
func hashBesidesRefusals(nd *testcluster.Node) string {
	st := nd.Agent.Node.FSM().Export()
	st.Refusals = nil
	return fsm.HashState(st)
}
