package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Certificate roles. A certificate names its role and name in a URI SAN,
// spiffe://switchyard/<role>/<name> (like Nomad's server.<region>.nomad
// names, it keeps a media node's certificate from acting as an agent).
const (
	RoleAgent = "agent"
	RoleMedia = "media"
)

// ErrWrongRole means a peer's certificate carries a role the connection
// does not accept.
var ErrWrongRole = errors.New("peer certificate has the wrong role")

// URIScheme and URIHost form the identity URI of a certificate.
const (
	URIScheme = "spiffe"
	URIHost   = "switchyard"
)

// ValidRole reports whether r is a certificate role.
func ValidRole(r string) bool { return r == RoleAgent || r == RoleMedia }

// identityURI is the URI SAN naming role and name. Path holds the name as
// is: the URL escapes it when written into the certificate and
// PeerIdentity reads it back unescaped, so any server id round-trips
// (escaping it here too would hand back its escaped form).
func identityURI(role, name string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: URIHost, Path: "/" + role + "/" + name}
}

// CertIdentity is what a certificate says about its holder.
type CertIdentity struct {
	// Role is agent or media; "" for a certificate issued before roles
	// existed (treated as an agent: reissue it to give it a role).
	Role string
	// Name is the agent id or media server id.
	Name string
}

// PeerIdentity reads the role and name of a (verified) certificate: the
// first spiffe://switchyard/<role>/<name> URI SAN, else its CommonName
// with no role.
func PeerIdentity(c *x509.Certificate) CertIdentity {
	for _, u := range c.URIs {
		if u.Scheme != URIScheme || u.Host != URIHost {
			continue
		}
		role, name, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		if ok && ValidRole(role) && name != "" {
			return CertIdentity{Role: role, Name: name}
		}
	}
	return CertIdentity{Name: c.Subject.CommonName}
}

// IsAgent reports whether a certificate may act as an agent: role agent, or
// no role at all (certificates issued before roles existed).
func (c CertIdentity) IsAgent() bool { return c.Role == RoleAgent || c.Role == "" }

// RequireAgent wraps cfg so that the handshake also fails unless the peer's
// certificate is an agent's (raft, agent-to-agent). onReject, if non-nil,
// sees every refusal.
func RequireAgent(cfg *tls.Config, onReject func(error)) *tls.Config {
	c := cfg.Clone()
	inner := cfg.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if inner != nil {
			if err := inner(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return ErrNoClientCert
		}
		if id := PeerIdentity(cs.PeerCertificates[0]); !id.IsAgent() {
			err := fmt.Errorf("%w: %s is a %s certificate, only agents may connect here", ErrWrongRole, id.Name, id.Role)
			if onReject != nil {
				onReject(err)
			}
			return err
		}
		return nil
	}
	return c
}

// HTTPServerConfig returns the TLS configuration of the HTTPS admin API:
// client certificates are optional (operators use tokens) but, when given,
// must chain to the cluster CA; they then identify an agent or media node.
func (id *Identity) HTTPServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    id.Pool,
	}
}

// CAClientConfig returns a TLS client configuration for clients of the
// agents that hold no certificate of their own (the CLI, the SDK, media
// nodes and sidecars reaching the HTTPS API): it accepts only a server
// certificate that chains to the cluster CA in caPEM and is an agent's
// (IsAgent), so a media node's certificate, which the same CA signs, cannot
// pose as an agent and collect the client's token. Host names are not
// checked.
func CAClientConfig(caPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate found in PEM")
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, //nolint:gosec // chain verified below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyPeer(pool, cs.PeerCertificates, x509.ExtKeyUsageServerAuth); err != nil {
				return err
			}
			if id := PeerIdentity(cs.PeerCertificates[0]); !id.IsAgent() {
				return fmt.Errorf("%w: %s is a %s certificate, not an agent's", ErrWrongRole, id.Name, id.Role)
			}
			return nil
		},
	}, nil
}
