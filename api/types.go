// Package api is Switchyard's HTTP admin API (JSON, versioned under /v1)
// and its Go client. Any agent serves every path: reads are answered by the
// leader (linearizable) unless ?stale=true, and writes reaching a follower
// are forwarded to the leader. The CLI and the agents' bootstrap/join use
// the client. Field names are snake_case and are a contract: add, never
// rename.
package api

import (
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Allocation is the JSON form of an allocation.
type Allocation struct {
	ID              string `json:"id"`
	RequestID       string `json:"request_id"`
	Room            string `json:"room"`
	Requester       string `json:"requester,omitempty"`
	Server          string `json:"server"`
	Units           int64  `json:"units"`
	State           string `json:"state"`
	CreatedAtUnixMs int64  `json:"created_at_unix_ms"`
	ExpiresAtUnixMs int64  `json:"expires_at_unix_ms,omitempty"`
	EndedAtUnixMs   int64  `json:"ended_at_unix_ms,omitempty"`
	// Duplicate is set on an allocate answer when the request id had been
	// granted before and this is that earlier allocation.
	Duplicate bool `json:"duplicate,omitempty"`
}

// AllocateRequest is the body of POST /v1/allocations.
type AllocateRequest struct {
	RequestID string `json:"request_id"`
	Room      string `json:"room"`
	Units     int64  `json:"units"`
	Requester string `json:"requester,omitempty"`
	Region    string `json:"region,omitempty"`
	Server    string `json:"server,omitempty"`
	TTLMs     int64  `json:"ttl_ms,omitempty"`
}

// Server is the JSON form of a media server.
type Server struct {
	ID                   string            `json:"id"`
	Addresses            []string          `json:"addresses,omitempty"`
	Region               string            `json:"region,omitempty"`
	Zone                 string            `json:"zone,omitempty"`
	Labels               map[string]string `json:"labels,omitempty"`
	Capacity             int64             `json:"capacity"`
	Used                 int64             `json:"used"`
	Free                 int64             `json:"free"`
	State                string            `json:"state"`
	Incarnation          uint64            `json:"incarnation"`
	RegisteredAtUnixMs   int64             `json:"registered_at_unix_ms"`
	StateChangedAtUnixMs int64             `json:"state_changed_at_unix_ms"`
}

// RegisterServerRequest is the body of POST /v1/servers.
type RegisterServerRequest struct {
	ID          string            `json:"id"`
	Addresses   []string          `json:"addresses,omitempty"`
	Region      string            `json:"region,omitempty"`
	Zone        string            `json:"zone,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Capacity    int64             `json:"capacity"`
	Incarnation uint64            `json:"incarnation,omitempty"`
}

// Member is the body of POST /v1/members (join).
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr,omitempty"`
	QUICAddr string `json:"quic_addr,omitempty"`
}

// TransferRequest is the body of POST /v1/operator/transfer-leader.
type TransferRequest struct {
	ID string `json:"id,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error     string `json:"error"`
	Code      string `json:"code"`
	Retryable bool   `json:"retryable"`
	Leader    string `json:"leader,omitempty"`
}

// AllocationFromPB converts the FSM form to JSON.
func AllocationFromPB(a *fsmpb.Allocation) Allocation {
	return Allocation{
		ID: a.GetId(), RequestID: a.GetRequestId(), Room: a.GetRoom(), Requester: a.GetRequester(),
		Server: a.GetServer(), Units: a.GetUnits(), State: fsm.AllocationStateName(a.GetState()),
		CreatedAtUnixMs: a.GetCreatedAtUnixMs(), ExpiresAtUnixMs: a.GetExpiresAtUnixMs(), EndedAtUnixMs: a.GetEndedAtUnixMs(),
	}
}

// ServerFromPB converts the FSM form to JSON.
func ServerFromPB(s *fsmpb.Server) Server {
	return Server{
		ID: s.GetId(), Addresses: s.GetAddresses(), Region: s.GetRegion(), Zone: s.GetZone(), Labels: s.GetLabels(),
		Capacity: s.GetCapacityUnits(), Used: s.GetUsedUnits(), Free: s.GetCapacityUnits() - s.GetUsedUnits(),
		State: fsm.StateName(s.GetState()), Incarnation: s.GetIncarnation(),
		RegisteredAtUnixMs: s.GetRegisteredAtUnixMs(), StateChangedAtUnixMs: s.GetStateChangedAtUnixMs(),
	}
}
