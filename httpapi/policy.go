package httpapi

import (
	"net/http"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// IntentFromPB converts the FSM form to JSON.
func IntentFromPB(it *fsmpb.ProvisionIntent) api.Intent {
	return api.Intent{
		ID: it.GetId(), Kind: fsm.IntentKindName(it.GetKind()), State: fsm.IntentStateName(it.GetState()),
		ServerID: it.GetServerId(), Region: it.GetRegion(), Zone: it.GetZone(), Units: it.GetUnits(),
		// [], not null: the fields are a contract.
		RequestIDs: append([]string{}, it.GetRequestIds()...), Rooms: append([]string{}, it.GetRooms()...),
		Owner: it.GetOwner(), Error: it.GetError(),
		CreatedAtUnixMs: it.GetCreatedAtUnixMs(), UpdatedAtUnixMs: it.GetUpdatedAtUnixMs(), DeadlineUnixMs: it.GetDeadlineUnixMs(),
	}
}

// registerPolicyRoutes adds the routes of this file (called by NewHandler).
func (s *Handler) registerPolicyRoutes() {
	s.handle("GET /v1/policy", s.getPolicy, false)
	s.handle("PUT /v1/policy", s.setPolicy, true)
	s.handle("POST /v1/policy/validate", s.validatePolicy, false)
	s.handle("GET /v1/provisioning/intents", s.listIntents, false)
}

func (s *Handler) getPolicy(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, api.PolicyFromPB(s.st.Policy()))
}

// setPolicy validates first (a bad policy never reaches the log; Apply
// would refuse it too), commits, and answers the policy now in force.
func (s *Handler) setPolicy(w http.ResponseWriter, r *http.Request) {
	var p api.Policy
	if err := decode(w, r, &p); err != nil {
		s.fail(w, err)
		return
	}
	pb := p.ToPB()
	if err := fsm.CheckPolicyInput(pb); err != nil { // fsm/limits.go
		s.fail(w, err)
		return
	}
	if err := fsm.ValidatePolicy(pb); err != nil {
		s.fail(w, err)
		return
	}
	applied, err := s.b.SetPolicy(r.Context(), pb)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, api.PolicyFromPB(applied))
}

func (s *Handler) validatePolicy(w http.ResponseWriter, r *http.Request) {
	var p api.Policy
	if err := decode(w, r, &p); err != nil {
		s.fail(w, err)
		return
	}
	if err := fsm.ValidatePolicy(p.ToPB()); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, api.ValidateResult{Valid: true, Strategy: p.Strategy})
}

// listIntents answers the provisioning intents ordered by id, paged like
// every list (paging.go).
func (s *Handler) listIntents(w http.ResponseWriter, r *http.Request) {
	its, err := page(w, r, s.st.Intents(), (*fsmpb.ProvisionIntent).GetId)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSONList(w, its, func(it *fsmpb.ProvisionIntent) any { return IntentFromPB(it) })
}
