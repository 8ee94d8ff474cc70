package quicapi

import (
	"crypto/tls"
	"fmt"

	"github.com/switchyard/switchyard/acl"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/pki"
	"github.com/switchyard/switchyard/transport/transportpb"
)

func peerIdentity(cs tls.ConnectionState) pki.CertIdentity {
	if len(cs.PeerCertificates) == 0 {
		return pki.CertIdentity{}
	}
	return pki.PeerIdentity(cs.PeerCertificates[0])
}

// authorize checks a request against the authorization table of package
// acl, with the principal the connection's certificate names. Requests
// relayed by a follower are accepted only from an agent certificate that
// names a raft peer of the cluster (isPeer; the follower checked the
// original sender): another certificate of the CA cannot pass its
// requests off as relayed. Every other request on this listener is a media
// server's (register, drain, allocate, release), accepted only from a
// media certificate, and register and drain only for the server id that
// certificate names. An agent certificate, or one without a role (issued
// before roles existed, and treated as an agent's), may not act as a media
// server: roles keep the two apart in both directions, as raft keeps media
// certificates out. An allocation naming a requester (a cascade) must
// name the certificate's own server.
func authorize(pc *peerConn, req *transportpb.Request, isPeer func(name string) bool) error {
	if req.GetForwardedBy() != "" {
		if !pc.id.IsAgent() {
			return fmt.Errorf("%w: only agents relay requests; %s is a %s certificate", acl.ErrPermissionDenied, pc.id.Name, pc.id.Role)
		}
		if !isPeer(pc.id.Name) {
			return fmt.Errorf("%w: only the cluster's agents relay requests; %s is no raft peer", acl.ErrPermissionDenied, pc.id.Name)
		}
		return nil
	}
	if pc.id.Role != pki.RoleMedia {
		what := "an agent certificate"
		if pc.id.Role == "" {
			what = "a certificate without a role (treated as an agent's)"
		}
		return fmt.Errorf("%w: %s is %s, and only a media certificate naming its server id may act as a media server (switchyard tls cert create --role media --name ID)",
			acl.ErrPermissionDenied, pc.id.Name, what)
	}
	p := acl.Principal{Kind: "cert", Role: fsm.RoleMedia, ID: pc.id.Name, Server: pc.id.Name}
	switch b := req.GetBody().(type) {
	case *transportpb.Request_Register:
		return acl.Authorize(p, acl.PermServer, b.Register.GetServer().GetId())
	case *transportpb.Request_Drain:
		return acl.Authorize(p, acl.PermServer, b.Drain.GetServerId())
	case *transportpb.Request_Allocate:
		// A cascade's requester is the media server asking: a certificate
		// names only its own (the requester is left out of the pick and
		// owns the cascade).
		// A malformed requester is left to validation, which refuses it
		// as invalid_argument over HTTP and QUIC alike.
		if rq := b.Allocate.GetRequester(); rq != "" && rq != p.Server && fsm.CheckText("requester", rq, fsm.MaxIDLen) == nil {
			return fmt.Errorf("%w: %s may request allocations only as media server %q, not %q", acl.ErrPermissionDenied, p, p.Server, rq)
		}
		return acl.Authorize(p, acl.PermAllocate, "")
	case *transportpb.Request_Release:
		return acl.Authorize(p, acl.PermAllocate, "")
	}
	return acl.Authorize(p, acl.PermOperator, "")
}
