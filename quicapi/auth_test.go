package quicapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/quic-go/quic-go"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/pki"
	"github.com/switchyard/switchyard/transport"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// ask sends one request over a fresh connection to addr presenting id and
// returns the error code of the answer ("" when accepted) and its message.
func ask(t *testing.T, id *pki.Identity, addr string, req *transportpb.Request) (code, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, id.ClientConfig(transport.ALPN), &quic.Config{EnableDatagrams: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.CloseWithError(0, "") }()
	req.Version = transport.RequestVersion
	resp, err := transport.RoundTrip(ctx, conn, req, pollTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetErrorCode(), resp.GetErrorMessage()
}

func registerReq(id string) *transportpb.Request {
	return &transportpb.Request{Body: &transportpb.Request_Register{Register: &transportpb.RegisterRequest{
		Server: &fsmpb.Server{Id: id, CapacityUnits: 1, Incarnation: 99, Addresses: []string{"http://evil"}}}}}
}

func drainReq(id string) *transportpb.Request {
	return &transportpb.Request{Body: &transportpb.Request_Drain{Drain: &transportpb.DrainRequest{ServerId: id}}}
}

// TestMediaCertificateActsOnlyAsItself: a certificate issued for m1 may
// register m1, through a follower or the leader, and is refused
// (and counted) for m2, as it is for a cascade requested in m2's name.
func TestMediaCertificateActsOnlyAsItself(t *testing.T) {
	c := newCluster(t, 3, 0, nil)
	leader := leaderNode(t, c)
	register(t, newClient(t, c, "m2", leader.Cfg.QUICAddr), "m2", 5, 1)
	m1 := c.Identity("m1")
	for _, nd := range c.Running() {
		register(t, newClient(t, c, "m1", nd.Cfg.QUICAddr), "m1", 5, 1)
		if code, msg := ask(t, m1, nd.Cfg.QUICAddr, registerReq("m2")); code != "permission_denied" {
			t.Fatalf("m1 registering m2 via %s: %q %s", nd.ID, code, msg)
		}
		if code, msg := ask(t, m1, nd.Cfg.QUICAddr, drainReq("m2")); code != "permission_denied" {
			t.Fatalf("m1 draining m2 via %s: %q %s", nd.ID, code, msg)
		}
		// A cascade requested in m2's name, and in its own.
		cascade := func(requester string) *transportpb.Request {
			return &transportpb.Request{Body: &transportpb.Request_Allocate{Allocate: &transportpb.AllocateRequest{
				RequestId: "cascade-" + requester + "-" + nd.ID, Room: "r", Units: 1, Requester: requester}}}
		}
		if code, msg := ask(t, m1, nd.Cfg.QUICAddr, cascade("m2")); code != "permission_denied" {
			t.Fatalf("m1 requesting a cascade as m2 via %s: %q %s", nd.ID, code, msg)
		}
		if code, msg := ask(t, m1, nd.Cfg.QUICAddr, cascade("m1")); code == "permission_denied" || code == "unauthenticated" {
			t.Fatalf("m1 requesting a cascade as itself via %s: %q %s", nd.ID, code, msg)
		}
		for _, op := range []string{"register", "drain"} {
			if n := testutil.ToFloat64(nd.Agent.QUIC.Metrics().Requests.WithLabelValues(op, "permission_denied")); n < 1 {
				t.Fatalf("%s counted %v refused %s requests", nd.ID, n, op)
			}
		}
	}
	// m2 sends no load: the failure detector may mark it down meanwhile,
	// but the refused requests must not have re-registered or drained it.
	s, _ := leader.Agent.Node.FSM().Server("m2")
	if s.GetIncarnation() != 1 || len(s.GetAddresses()) != 0 || s.GetState() == fsmpb.ServerState_SERVER_STATE_DRAINING {
		t.Fatalf("m2 changed: %v", s)
	}
}

// TestAgentCertificateCannotActAsMedia: an agent certificate, and a
// certificate without a role (issued before roles existed, treated as an
// agent's), may not register, drain or allocate as a media server, even
// under its own name, on the leader or a follower: each is refused with
// permission_denied, counted, and changes nothing.
func TestAgentCertificateCannotActAsMedia(t *testing.T) {
	c := newCluster(t, 3, -1, nil)
	leader := leaderNode(t, c)
	register(t, newClient(t, c, "m1", leader.Cfg.QUICAddr), "m1", 5, 1)
	for _, nd := range c.Running() {
		for _, tc := range []struct {
			kind string
			id   *pki.Identity
		}{
			{"agent", c.AgentIdentity("m1")},
			{"agent named after a node", c.AgentIdentity(nd.ID)},
			{"role-less", c.LegacyIdentity("m1")},
		} {
			alloc := &transportpb.Request{Body: &transportpb.Request_Allocate{Allocate: &transportpb.AllocateRequest{RequestId: "agent-" + nd.ID, Room: "r", Units: 1}}}
			for _, req := range []*transportpb.Request{registerReq("m1"), registerReq("m9"), registerReq(nd.ID), drainReq("m1"), alloc} {
				code, msg := ask(t, tc.id, nd.Cfg.QUICAddr, req)
				if code != "permission_denied" || !strings.Contains(msg, "media certificate") {
					t.Fatalf("%s certificate via %s, %v: %q %s", tc.kind, nd.ID, req, code, msg)
				}
			}
		}
		m := nd.Agent.QUIC.Metrics().Requests
		for op, want := range map[string]float64{"register": 9, "drain": 3, "allocate": 3} {
			if n := testutil.ToFloat64(m.WithLabelValues(op, "permission_denied")); n < want {
				t.Fatalf("%s counted %v refused %s requests, want %v", nd.ID, n, op, want)
			}
		}
	}
	// Nor may they pass their requests off as relayed by an agent: only
	// a raft peer's certificate relays.
	for _, id := range []*pki.Identity{c.AgentIdentity("m1"), c.LegacyIdentity("m1")} {
		for _, req := range []*transportpb.Request{registerReq("m9"), drainReq("m1")} {
			req.ForwardedBy = "n1"
			if code, msg := ask(t, id, leader.Cfg.QUICAddr, req); code != "permission_denied" || !strings.Contains(msg, "no raft peer") {
				t.Fatalf("%s relaying %v to the leader: %q %s", id.Name, req, code, msg)
			}
		}
	}
	f := leader.Agent.Node.FSM()
	if s, _ := f.Server("m1"); s.GetIncarnation() != 1 || len(s.GetAddresses()) != 0 || s.GetState() != 1 {
		t.Fatalf("m1 changed: %v", s)
	}
	for _, id := range []string{"m9", "n1", "n2", "n3"} {
		if _, ok := f.Server(id); ok {
			t.Fatalf("%s registered by a refused request", id)
		}
	}
	if n := len(f.Allocations(fsm.AllocationFilter{})); n != 0 {
		t.Fatalf("%d allocations made by refused requests", n)
	}
}
