package httpapi

import (
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// AllocationFromPB converts the FSM form to JSON.
func AllocationFromPB(a *fsmpb.Allocation) api.Allocation {
	return api.Allocation{
		ID: a.GetId(), RequestID: a.GetRequestId(), Room: a.GetRoom(), Requester: a.GetRequester(),
		Server: a.GetServer(), Units: a.GetUnits(), State: fsm.AllocationStateName(a.GetState()),
		CreatedAtUnixMs: a.GetCreatedAtUnixMs(), ExpiresAtUnixMs: a.GetExpiresAtUnixMs(), EndedAtUnixMs: a.GetEndedAtUnixMs(),
	}
}

// ServerFromPB converts the FSM form to JSON.
func ServerFromPB(s *fsmpb.Server) api.Server {
	addrs, labels := s.GetAddresses(), s.GetLabels()
	if addrs == nil {
		addrs = []string{} // printed as [], not null: the fields are a contract
	}
	if labels == nil {
		labels = map[string]string{}
	}
	return api.Server{
		ID: s.GetId(), Addresses: addrs, Region: s.GetRegion(), Zone: s.GetZone(), Labels: labels,
		Capacity: s.GetCapacityUnits(), Used: s.GetUsedUnits(), Free: s.GetCapacityUnits() - s.GetUsedUnits(),
		State: fsm.StateName(s.GetState()), Incarnation: s.GetIncarnation(),
		RegisteredAtUnixMs: s.GetRegisteredAtUnixMs(), StateChangedAtUnixMs: s.GetStateChangedAtUnixMs(),
	}
}
