package main

// Regression tests for the "first hour" fixes: the --json contract fields
// are printed even when empty, and `policy get` says which values are
// defaults rather than printing the zeros that stand for them. (The dev
// cluster's ERROR lines are checked in TestDevClusterStartsAndStopsOnCtrlC,
// the wrong address in TestCLIWrongAddress.)

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// present stands for "the key is there, any value" in the wants below.
type present struct{}

// checkFields fails unless obj (a decoded JSON object) has every key of
// want, with the value given (compared after JSON decoding: "" for an
// empty string, float64(0), []any{} for [], map[string]any{} for {}, nil
// for null) unless that is present{}.
func checkFields(t *testing.T, what string, obj any, want map[string]any) {
	t.Helper()
	m, ok := obj.(map[string]any)
	if !ok {
		t.Fatalf("%s: not a JSON object: %#v", what, obj)
	}
	for k, w := range want {
		v, ok := m[k]
		if !ok {
			t.Errorf("%s: field %q missing (has %v)", what, k, keys(m))
			continue
		}
		if _, anyValue := w.(present); !anyValue && !reflect.DeepEqual(v, w) {
			t.Errorf("%s: %q is %#v, want %#v", what, k, v, w)
		}
	}
}

// with returns a copy of base with the entries of over added or replaced.
func with(base map[string]any, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// TestFirstHourJSONFieldsPresentWhenEmpty: the fields the README's JSON
// contract lists are in the CLI's --json output when they are empty too
// (`requester` "", `expires_at_unix_ms`/`ended_at_unix_ms` 0, `addresses`
// [], `region`/`zone` "", `labels` {}, a member's `quic_addr` "", a
// policy's unset limits, weights and provisioning), for `server
// register|list|drain`, `alloc request|list|release`, `cluster status`,
// `operator raft list-peers` and `policy get`; and set, they carry the
// values given.
func TestFirstHourJSONFieldsPresentWhenEmpty(t *testing.T) {
	// NoQUIC: the member has no QUIC address, so `quic_addr` is empty.
	c := testcluster.New(t, 1, testcluster.Options{NoQUIC: true})
	c.WaitMembers(30 * time.Second)
	addr, tok := "--addr="+strings.Join(c.Addrs(), ","), "--token="+c.Token
	cliJSON := func(args ...string) any {
		t.Helper()
		out, errOut, err := runCLI(t, append(args, "--json", addr, tok)...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return v
	}
	only := func(what string, v any) any {
		t.Helper()
		arr, ok := v.([]any)
		if !ok || len(arr) != 1 {
			t.Fatalf("%s: want an array of one, got %#v", what, v)
		}
		return arr[0]
	}

	serverFields := map[string]any{
		"id": present{}, "capacity": float64(4), "used": present{}, "free": present{}, "state": "active",
		"incarnation": present{}, "registered_at_unix_ms": present{}, "state_changed_at_unix_ms": present{},
	}
	allocFields := map[string]any{
		"id": present{}, "request_id": present{}, "room": "room", "server": present{}, "units": float64(1),
		"created_at_unix_ms": present{},
	}
	for _, tc := range []struct {
		name        string
		register    []string       // extra `server register` flags
		server      map[string]any // the fields they set
		request     []string       // extra `alloc request` flags
		alloc       map[string]any
		released    map[string]any // the allocation after `alloc release`
		withExpires bool
	}{{
		name:     "empty",
		server:   map[string]any{"addresses": []any{}, "region": "", "zone": "", "labels": map[string]any{}},
		alloc:    map[string]any{"requester": "", "state": "active", "expires_at_unix_ms": float64(0), "ended_at_unix_ms": float64(0)},
		released: map[string]any{"requester": "", "state": "released", "expires_at_unix_ms": float64(0)},
	}, {
		// The same fields set: the check above is of these fields, not
		// of keys that happen to be there.
		name:        "set",
		register:    []string{"--addresses", "http://a,http://b", "--region", "eu", "--zone", "eu-1", "--labels", "k=v"},
		server:      map[string]any{"addresses": []any{"http://a", "http://b"}, "region": "eu", "zone": "eu-1", "labels": map[string]any{"k": "v"}},
		request:     []string{"--requester", "origin", "--ttl", "1h"},
		alloc:       map[string]any{"requester": "origin", "state": "active", "ended_at_unix_ms": float64(0)},
		released:    map[string]any{"requester": "origin", "state": "released"},
		withExpires: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			sid, rid := "s-"+tc.name, "q-"+tc.name
			server := with(with(serverFields, tc.server), map[string]any{"id": sid})
			checkFields(t, "server register", cliJSON(append([]string{"server", "register", "--id", sid, "--capacity", "4"}, tc.register...)...), server)
			listed := with(server, map[string]any{"load": nil, "load_age_ms": nil})
			checkFields(t, "server list", only("server list", cliJSON("server", "list", "--prefix", sid)), listed)

			alloc := with(with(allocFields, tc.alloc), map[string]any{"request_id": rid, "server": sid})
			a := cliJSON(append([]string{"alloc", "request", "--room", "room", "--units", "1", "--request-id", rid, "--server", sid}, tc.request...)...)
			checkFields(t, "alloc request", a, alloc)
			checkFields(t, "alloc list", only("alloc list", cliJSON("alloc", "list", "--server", sid)), alloc)
			r := cliJSON("alloc", "release", rid)
			checkFields(t, "alloc release", r, with(with(allocFields, tc.released), map[string]any{"request_id": rid, "server": sid, "ended_at_unix_ms": present{}}))
			if ended, _ := r.(map[string]any)["ended_at_unix_ms"].(float64); ended <= 0 {
				t.Errorf("alloc release: ended_at_unix_ms %v, want the time it ended", ended)
			}
			if exp, _ := a.(map[string]any)["expires_at_unix_ms"].(float64); tc.withExpires && exp <= 0 {
				t.Errorf("alloc request --ttl 1h: expires_at_unix_ms %v, want when it expires", exp)
			}
			checkFields(t, "server drain", cliJSON("server", "drain", sid), with(server, map[string]any{"state": "draining"}))
		})
	}

	nd := c.Nodes[0]
	member := map[string]any{
		"id": nd.ID, "raft_addr": nd.Cfg.RaftAddr, "http_addr": nd.Cfg.HTTPAddr, "quic_addr": "",
		"suffrage": "Voter", "leader": true, "features": present{},
	}
	st := cliJSON("cluster", "status")
	checkFields(t, "cluster status", st, map[string]any{
		"id": nd.ID, "state": present{}, "leader": nd.ID, "leader_http": present{}, "cluster_id": present{}, "term": present{},
		"last_index": present{}, "commit_index": present{}, "applied_index": present{}, "state_hash": present{}, "members": present{},
	})
	checkFields(t, "cluster status member", only("cluster status members", st.(map[string]any)["members"]), member)
	checkFields(t, "operator raft list-peers", only("list-peers", cliJSON("operator", "raft", "list-peers")), member)

	// A policy with nothing set: every field of the contract, empty.
	zeroLimits := map[string]any{"units": float64(0), "cpu": float64(0), "egress_bps": float64(0)}
	pol := cliJSON("policy", "get")
	checkFields(t, "policy get", pol, map[string]any{
		"strategy": present{}, "expr": "", "distances": []any{}, "tombstone_retention_ms": present{},
		"version": present{}, "applied_at_index": present{}, "applied_at_unix_ms": present{},
		"hard": zeroLimits, "soft": zeroLimits, "provisioning": present{}, "weights": present{},
	})
	checkFields(t, "policy get weights", pol.(map[string]any)["weights"], map[string]any{"units": float64(0), "cpu": float64(0), "egress": float64(0)})
	checkFields(t, "policy get provisioning", pol.(map[string]any)["provisioning"], map[string]any{
		"server_capacity": float64(0), "timeout_ms": float64(0), "min_pool": float64(0), "idle_retire_ms": float64(0), "disabled": false,
	})
}

// policyLines splits what printPolicy prints into its "label  value"
// lines (labels have single spaces, the tabwriter pads with two or more).
func policyLines(t *testing.T, out string) map[string]string {
	t.Helper()
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		k, v, ok := strings.Cut(l, "  ")
		if !ok {
			t.Fatalf("policy line %q has no value:\n%s", l, out)
		}
		lines[k] = strings.TrimSpace(v)
	}
	return lines
}

// TestFirstHourPolicyTextMarksDefaults: `policy get` prints the value in
// force where the policy leaves one unset, marked as the default — the
// weights as "units 1, cpu 0, egress 0 (default: none set)", the
// provisioning capacity and timeout as "100 (default)" and "1m0s
// (default)", idle retirement as "never" — and the values themselves once
// they are set.
func TestFirstHourPolicyTextMarksDefaults(t *testing.T) {
	const (
		defWeights = "units 1, cpu 0, egress 0 (default: none set)"
		defProv    = "capacity 100 (default), timeout 1m0s (default), min pool 0, idle retire never, disabled false"
	)
	for _, tc := range []struct {
		name string
		p    api.Policy
		want map[string]string
	}{
		{"unset", api.Policy{Strategy: "least-loaded"}, map[string]string{
			"strategy": "least-loaded", "hard limits": "none", "soft limits": "none", "weights": defWeights, "provisioning": defProv}},
		{"one weight", api.Policy{Weights: api.Weights{CPU: 2}}, map[string]string{"weights": "units 0, cpu 2, egress 0", "provisioning": defProv}},
		{"capacity only", api.Policy{Provisioning: api.Provisioning{ServerCapacity: 50}}, map[string]string{
			"weights": defWeights, "provisioning": "capacity 50, timeout 1m0s (default), min pool 0, idle retire never, disabled false"}},
		{"timeout only", api.Policy{Provisioning: api.Provisioning{TimeoutMs: 90_000}}, map[string]string{
			"provisioning": "capacity 100 (default), timeout 1m30s, min pool 0, idle retire never, disabled false"}},
		{"all set", api.Policy{Hard: api.Limits{Units: 0.9}, Weights: api.Weights{Units: 1, CPU: 2, Egress: 0.5},
			Provisioning: api.Provisioning{ServerCapacity: 20, TimeoutMs: 5000, MinPool: 2, IdleRetireMs: 300_000, Disabled: true}}, map[string]string{
			"hard limits": "units 90%", "weights": "units 1, cpu 2, egress 0.5",
			"provisioning": "capacity 20, timeout 5s, min pool 2, idle retire 5m0s, disabled true"}},
	} {
		var out strings.Builder
		cmd := &cobra.Command{}
		cmd.SetOut(&out)
		if err := printPolicy(cmd, tc.p); err != nil {
			t.Fatal(err)
		}
		got := policyLines(t, out.String())
		for k, w := range tc.want {
			if got[k] != w {
				t.Errorf("%s: %q is %q, want %q\n%s", tc.name, k, got[k], w, out.String())
			}
		}
	}

	// The same through `policy get` on a new cluster, and after `policy
	// set` changed some of them.
	c := testcluster.New(t, 1, testcluster.Options{NoQUIC: true})
	addr, tok := "--addr="+strings.Join(c.Addrs(), ","), "--token="+c.Token
	get := func() (map[string]string, string) {
		t.Helper()
		out, errOut, err := runCLI(t, "policy", "get", addr, tok)
		if err != nil {
			t.Fatalf("policy get: %v\n%s", err, errOut)
		}
		return policyLines(t, out), out
	}
	got, out := get()
	for k, w := range map[string]string{"weights": defWeights, "provisioning": defProv} {
		if got[k] != w {
			t.Errorf("policy get on a new cluster: %q is %q, want %q\n%s", k, got[k], w, out)
		}
	}
	if _, errOut, err := runCLI(t, "policy", "set", "--weight-cpu", "2", "--provision-timeout", "90s", "--idle-retire", "10m", addr, tok); err != nil {
		t.Fatalf("policy set: %v\n%s", err, errOut)
	}
	got, out = get()
	for k, w := range map[string]string{
		"weights":      "units 0, cpu 2, egress 0",
		"provisioning": "capacity 100 (default), timeout 1m30s, min pool 0, idle retire 10m0s, disabled false",
	} {
		if got[k] != w {
			t.Errorf("policy get after set: %q is %q, want %q\n%s", k, got[k], w, out)
		}
	}
	if !strings.HasPrefix(got["version"], "1 (from log index ") {
		t.Errorf("policy get after one set: version %q, want 1\n%s", got["version"], out)
	}
}
