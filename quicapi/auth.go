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
// acl, with the principal the connection's certificate names: an agent (or
// a certificate without a role) may do anything a media node may, for any
// server id; a media certificate acts only as the server id it names.
// Requests relayed by a follower are accepted only from agents (the
// follower checked the original sender).
func authorize(pc *peerConn, req *transportpb.Request) error {
	if req.GetForwardedBy() != "" {
		if !pc.id.IsAgent() {
			return fmt.Errorf("%w: only agents relay requests; %s is a %s certificate", acl.ErrPermissionDenied, pc.id.Name, pc.id.Role)
		}
		return nil
	}
	p := acl.Principal{Kind: "cert", Role: acl.RoleAgent, ID: pc.id.Name}
	if pc.id.Role == pki.RoleMedia {
		p = acl.Principal{Kind: "cert", Role: fsm.RoleMedia, ID: pc.id.Name, Server: pc.id.Name}
	}
	switch b := req.GetBody().(type) {
	case *transportpb.Request_Register:
		return acl.Authorize(p, acl.PermServer, b.Register.GetServer().GetId())
	case *transportpb.Request_Drain:
		return acl.Authorize(p, acl.PermServer, b.Drain.GetServerId())
	case *transportpb.Request_Allocate, *transportpb.Request_Release:
		return acl.Authorize(p, acl.PermAllocate, "")
	}
	return acl.Authorize(p, acl.PermOperator, "")
}
