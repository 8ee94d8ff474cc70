package cluster

// Features a member's binary understands, recorded in its member entry
// (fsmpb.Member.features). A leader uses a feature only while every voter
// lists it, so in the middle of a rolling upgrade the cluster keeps to
// what its oldest member applies the same way.
const (
	// FeatureCommittedRefusals: the leader commits momentary refusals
	// (fsmpb.Refusal) so that every later copy of a refused request gets
	// the same answer.
	FeatureCommittedRefusals = "committed_refusals"
	// FeatureForwardedPrincipal: a follower that forwards a request sent
	// with a certificate names that certificate to the leader (the HTTP
	// API's X-Switchyard-Principal), so the leader authorizes it as its
	// sender. Until every voter does, an older follower's forward of a
	// media node's request carries only the follower's agent certificate,
	// and the leader lets agent certificates act for media servers.
	FeatureForwardedPrincipal = "forwarded_principal"
	// FeatureCommittedUnregistered: the leader also commits the refusal
	// of a request pinned to a server that is not registered
	// (not_found), so a copy that comes back once the server has
	// registered gets the same answer instead of a grant.
	FeatureCommittedUnregistered = "committed_unregistered"
	// FeatureMediaTokenServer: media tokens may be bound to one server
	// (fsmpb.AclToken.server). An agent of an earlier release would keep
	// the field but let the token act for any server, so the leader makes
	// bound tokens only once every voter lists this.
	FeatureMediaTokenServer = "media_token_server"
	// FeatureACLInApply: a command carries the id of the ACL token that
	// authorized it (fsmpb.Command.acl_token_id) and Apply refuses it when
	// that token was revoked or expired by then. An agent of an earlier
	// release would ignore the field and apply the command anyway, so the
	// leader sets it only once every voter lists this.
	FeatureACLInApply = "acl_in_apply"
	// FeatureRoomVacate: a room release may keep the record, vacated,
	// with a reason (fsmpb.ReleaseRoom.vacate_reason). An agent of an
	// earlier release would forget the room instead, so the leader sends
	// the reason only once every voter lists this.
	FeatureRoomVacate = "room_vacate"
)

// Features lists the features this binary understands.
func Features() []string {
	return []string{FeatureCommittedRefusals, FeatureForwardedPrincipal, FeatureCommittedUnregistered, FeatureMediaTokenServer, FeatureACLInApply, FeatureRoomVacate}
}

// MaxFeatures and MaxFeatureLen bound a member entry's feature list.
const (
	MaxFeatures   = 32
	MaxFeatureLen = 64
)

// FeatureOn reports whether every voter's member entry lists feature (one
// of Features): whether the cluster may use it.
func (n *Node) FeatureOn(feature string) bool { return n.featureOn(feature) }

// featureOn reports whether every voter's member entry lists feature.
func (n *Node) featureOn(feature string) bool {
	vs := n.voters()
	if len(vs) == 0 {
		return false
	}
	for _, v := range vs {
		if !n.fsm.MemberLists(string(v.ID), feature) {
			return false
		}
	}
	return true
}
