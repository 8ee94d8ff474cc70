// Package provision starts and stops media servers on behalf of the
// allocator's leader. A Provider is told, for one committed intent, which
// server id to bring up (the new media node must register under exactly that
// id, which is how the leader learns it is up) or which server to take
// down. Providers: Exec (a command), Webhook (HTTP POST), Docker (a
// container from the project's image) and Local (a `switchyard media`
// process, for `switchyard dev`).
//
// A Provider call returns once the provider has accepted the work (the
// command exited 0, the webhook answered 2xx, the container or process
// started); registration is awaited by the leader, not here. Every call is
// bounded by its context. The leader guarantees a Provision call is made at
// most once per intent across leader changes (see cluster/provision.go).
package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Actions named in Spec.Action.
const (
	ActionProvision   = "provision"
	ActionDeprovision = "deprovision"
)

// ErrProvider is wrapped by every failure a provider reports.
var ErrProvider = errors.New("provider failed")

// Spec describes one provisioning action. Its JSON form is the body the
// Exec provider writes on stdin and the Webhook provider POSTs; field names
// are a contract.
type Spec struct {
	Action   string `json:"action"`
	IntentID string `json:"intent_id"`
	// ServerID is the id the new media server must register under (or the
	// server to stop).
	ServerID string `json:"server_id"`
	Region   string `json:"region,omitempty"`
	Zone     string `json:"zone,omitempty"`
	// Units is what the waiting requests need in total; Capacity is the
	// capacity the policy expects a new server to have.
	Units      int64    `json:"units"`
	Capacity   int64    `json:"capacity"`
	RequestIDs []string `json:"request_ids,omitempty"`
	Rooms      []string `json:"rooms,omitempty"`
	// Cluster lists the allocator agents' HTTP addresses the new server
	// registers with.
	Cluster []string `json:"cluster,omitempty"`
}

// Env returns the spec as SWITCHYARD_* environment variables.
func (s Spec) Env() []string {
	return []string{
		"SWITCHYARD_ACTION=" + s.Action,
		"SWITCHYARD_INTENT_ID=" + s.IntentID,
		"SWITCHYARD_SERVER_ID=" + s.ServerID,
		"SWITCHYARD_REGION=" + s.Region,
		"SWITCHYARD_ZONE=" + s.Zone,
		"SWITCHYARD_UNITS=" + strconv.FormatInt(s.Units, 10),
		"SWITCHYARD_CAPACITY=" + strconv.FormatInt(s.Capacity, 10),
		"SWITCHYARD_REQUEST_IDS=" + strings.Join(s.RequestIDs, ","),
		"SWITCHYARD_ROOMS=" + strings.Join(s.Rooms, ","),
		"SWITCHYARD_CLUSTER=" + strings.Join(s.Cluster, ","),
	}
}

// JSON is the spec's wire form.
func (s Spec) JSON() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		// A struct of strings and ints always marshals.
		panic(fmt.Sprintf("provision: marshal spec: %v", err))
	}
	return b
}

// Provider starts and stops media servers. Implementations must be safe
// for concurrent use and must return when ctx ends.
type Provider interface {
	// Name identifies the provider in logs and errors ("exec", ...).
	Name() string
	// Provision starts a media server that registers as spec.ServerID.
	Provision(ctx context.Context, spec Spec) error
	// Deprovision stops spec.ServerID (already drained and idle).
	Deprovision(ctx context.Context, spec Spec) error
}

// tail returns at most the last n bytes of b, trimmed, for error messages.
func tail(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
