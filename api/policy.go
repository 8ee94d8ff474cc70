package api

import (
	"context"
	"fmt"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Limits is the JSON form of fsmpb.Limits; zero fields mean no limit.
type Limits struct {
	// Units is a fraction (0, 1] of each server's capacity.
	Units float64 `json:"units"`
	// CPU is a reported utilisation (0, 1].
	CPU       float64 `json:"cpu"`
	EgressBps int64   `json:"egress_bps"`
}

// Weights is the JSON form of fsmpb.Weights (all zero: units = 1).
type Weights struct {
	Units  float64 `json:"units"`
	CPU    float64 `json:"cpu"`
	Egress float64 `json:"egress"`
}

// RegionDistance is one entry of the region strategy's distance table.
type RegionDistance struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Distance int64  `json:"distance"`
}

// Provisioning is the JSON form of fsmpb.Provisioning.
type Provisioning struct {
	ServerCapacity int64 `json:"server_capacity"`
	TimeoutMs      int64 `json:"timeout_ms"`
	MinPool        int32 `json:"min_pool"`
	IdleRetireMs   int64 `json:"idle_retire_ms"`
	Disabled       bool  `json:"disabled"`
}

// Policy is the JSON form of the placement policy (GET/PUT /v1/policy).
type Policy struct {
	Strategy             string           `json:"strategy"`
	Expr                 string           `json:"expr"`
	Hard                 Limits           `json:"hard"`
	Soft                 Limits           `json:"soft"`
	Weights              Weights          `json:"weights"`
	Distances            []RegionDistance `json:"distances"`
	Provisioning         Provisioning     `json:"provisioning"`
	TombstoneRetentionMs int64            `json:"tombstone_retention_ms"`
	// Version, AppliedAtIndex and AppliedAtUnixMs are set by the cluster
	// and ignored on PUT.
	Version         uint64 `json:"version"`
	AppliedAtIndex  uint64 `json:"applied_at_index"`
	AppliedAtUnixMs int64  `json:"applied_at_unix_ms"`
	// IfVersion, on PUT, makes the change conditional on the current
	// version (409 version_mismatch otherwise).
	IfVersion uint64 `json:"if_version,omitempty"`
}

// ValidateResult is the answer of POST /v1/policy/validate.
type ValidateResult struct {
	Valid    bool   `json:"valid"`
	Strategy string `json:"strategy"`
}

// Intent is the JSON form of a provisioning intent.
type Intent struct {
	ID              string   `json:"id"`
	Kind            string   `json:"kind"`
	State           string   `json:"state"`
	ServerID        string   `json:"server_id"`
	Region          string   `json:"region"`
	Zone            string   `json:"zone"`
	Units           int64    `json:"units"`
	RequestIDs      []string `json:"request_ids"`
	Rooms           []string `json:"rooms"`
	Owner           string   `json:"owner"`
	Error           string   `json:"error"`
	CreatedAtUnixMs int64    `json:"created_at_unix_ms"`
	UpdatedAtUnixMs int64    `json:"updated_at_unix_ms"`
	DeadlineUnixMs  int64    `json:"deadline_unix_ms"`
}

// PolicyFromPB converts the FSM form to JSON.
func PolicyFromPB(p *fsmpb.Policy) Policy {
	out := Policy{
		Strategy: p.GetStrategy(), Expr: p.GetExpr(),
		Hard:    Limits{Units: p.GetHard().GetUnits(), CPU: p.GetHard().GetCpu(), EgressBps: p.GetHard().GetEgressBps()},
		Soft:    Limits{Units: p.GetSoft().GetUnits(), CPU: p.GetSoft().GetCpu(), EgressBps: p.GetSoft().GetEgressBps()},
		Weights: Weights{Units: p.GetWeights().GetUnits(), CPU: p.GetWeights().GetCpu(), Egress: p.GetWeights().GetEgress()},
		Provisioning: Provisioning{
			ServerCapacity: p.GetProvisioning().GetServerCapacity(), TimeoutMs: p.GetProvisioning().GetTimeoutMs(),
			MinPool: p.GetProvisioning().GetMinPool(), IdleRetireMs: p.GetProvisioning().GetIdleRetireMs(),
			Disabled: p.GetProvisioning().GetDisabled(),
		},
		TombstoneRetentionMs: p.GetTombstoneRetentionMs(),
		Version:              p.GetVersion(), AppliedAtIndex: p.GetAppliedAtIndex(), AppliedAtUnixMs: p.GetAppliedAtUnixMs(),
		IfVersion: p.GetIfVersion(),
		Distances: []RegionDistance{}, // [], not null: the field is a contract
	}
	for _, d := range p.GetDistances() {
		out.Distances = append(out.Distances, RegionDistance{From: d.GetFrom(), To: d.GetTo(), Distance: d.GetDistance()})
	}
	return out
}

// ToPB converts the JSON form to the FSM form (cluster-set fields dropped).
func (p Policy) ToPB() *fsmpb.Policy {
	out := &fsmpb.Policy{
		Strategy: p.Strategy, Expr: p.Expr, TombstoneRetentionMs: p.TombstoneRetentionMs, IfVersion: p.IfVersion,
		Hard:    &fsmpb.Limits{Units: p.Hard.Units, Cpu: p.Hard.CPU, EgressBps: p.Hard.EgressBps},
		Soft:    &fsmpb.Limits{Units: p.Soft.Units, Cpu: p.Soft.CPU, EgressBps: p.Soft.EgressBps},
		Weights: &fsmpb.Weights{Units: p.Weights.Units, Cpu: p.Weights.CPU, Egress: p.Weights.Egress},
		Provisioning: &fsmpb.Provisioning{
			ServerCapacity: p.Provisioning.ServerCapacity, TimeoutMs: p.Provisioning.TimeoutMs,
			MinPool: p.Provisioning.MinPool, IdleRetireMs: p.Provisioning.IdleRetireMs, Disabled: p.Provisioning.Disabled,
		},
	}
	for _, d := range p.Distances {
		out.Distances = append(out.Distances, &fsmpb.RegionDistance{From: d.From, To: d.To, Distance: d.Distance})
	}
	return out
}

// Policy returns the committed placement policy.
func (c *Client) Policy(ctx context.Context, stale bool) (Policy, error) {
	var p Policy
	return p, c.do(ctx, "GET", "/v1/policy"+staleQuery(stale), nil, &p)
}

// SetPolicy replaces the policy and returns the one now in force. Setting
// the same policy twice (e.g. on a retry) is harmless; use IfVersion to
// make it conditional.
func (c *Client) SetPolicy(ctx context.Context, p Policy) (Policy, error) {
	var out Policy
	if err := c.do(ctx, "PUT", "/v1/policy", mustJSON(p), &out); err != nil {
		return out, fmt.Errorf("set policy: %w", err)
	}
	return out, nil
}

// ValidatePolicy asks an agent whether p would be accepted.
func (c *Client) ValidatePolicy(ctx context.Context, p Policy) (ValidateResult, error) {
	var out ValidateResult
	return out, c.do(ctx, "POST", "/v1/policy/validate", mustJSON(p), &out)
}

// Intents lists provisioning intents, ordered by id (all of them in one
// answer; see IntentsPage and Pages to read them a page at a time).
func (c *Client) Intents(ctx context.Context, stale bool) ([]Intent, error) {
	var out []Intent
	return out, c.do(ctx, "GET", "/v1/provisioning/intents"+staleQuery(stale), nil, &out)
}
