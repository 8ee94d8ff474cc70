package fsm

import "github.com/switchyard/switchyard/fsm/fsmpb"

// cloneAllocation copies a without reflection: allocations are copied on
// every apply that returns one and a million times per snapshot, where
// proto.Clone's reflection was most of the cost. Allocation is a flat
// message (scalars only); TestCloneAllocationIsComplete fails when a field
// is added to it and not copied here.
func cloneAllocation(a *fsmpb.Allocation) *fsmpb.Allocation {
	if a == nil {
		return nil
	}
	c := &fsmpb.Allocation{
		Id: a.Id, RequestId: a.RequestId, Room: a.Room, Requester: a.Requester, Server: a.Server, Units: a.Units,
		CreatedAtUnixMs: a.CreatedAtUnixMs, ExpiresAtUnixMs: a.ExpiresAtUnixMs, State: a.State, EndedAtUnixMs: a.EndedAtUnixMs,
	}
	if u := a.ProtoReflect().GetUnknown(); len(u) > 0 { // fields of a newer schema, kept as proto.Clone would
		c.ProtoReflect().SetUnknown(append([]byte(nil), u...))
	}
	return c
}
