// Package pki creates the cluster's certificate authority and the
// certificates of agents, media nodes and tools, and builds the mutual-TLS
// configurations every Switchyard connection uses (QUIC to media nodes,
// QUIC between agents, raft over TCP).
//
// Trust model: one cluster CA. Every certificate it issues is valid for
// both client and server authentication. Peers verify the certificate chain
// against the CA, not the host name (agents are dialled by address and
// rotate addresses more often than certificates), so holding a certificate
// of the cluster CA is what makes a peer trusted. A connection without a
// client certificate, or with one signed by another CA, is refused.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Sentinel errors of the package.
var (
	// ErrNoClientCert means the peer presented no certificate.
	ErrNoClientCert = errors.New("peer presented no certificate")
	// ErrUntrusted means the peer's certificate does not chain to the CA.
	ErrUntrusted = errors.New("peer certificate not signed by the cluster CA")
)

// File names inside a CA directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// Validity periods of generated certificates.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	CertValidity = 2 * 365 * 24 * time.Hour
)

// CA is a certificate authority able to issue certificates.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA generates a fresh self-signed CA (ECDSA P-256).
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"switchyard"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// Issue creates a certificate for name (its CommonName and first DNS SAN),
// valid for client and server authentication. hosts adds SANs: IP literals
// become IP SANs, anything else DNS SANs. "localhost", 127.0.0.1 and ::1
// are always included so loopback setups work out of the box.
func (ca *CA) Issue(name string, hosts []string) (certPEM, keyPEM []byte, err error) {
	return ca.IssueRole(name, RoleAgent, hosts)
}

// IssueRole is Issue for a certificate of role (agent or media), named in
// its URI SAN spiffe://switchyard/<role>/<name> (see roles.go).
func (ca *CA) IssueRole(name, role string, hosts []string) (certPEM, keyPEM []byte, err error) {
	if !ValidRole(role) {
		return nil, nil, fmt.Errorf("certificate role %q: want agent or media", role)
	}
	if name == "" {
		return nil, nil, errors.New("certificate name is required")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"switchyard"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(CertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{name, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		URIs:         []*url.URL{identityURI(role, name)},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate %s: %w", name, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), keyPEM, nil
}

// WriteCA writes ca.pem and ca-key.pem (0600) into dir, creating it. It
// refuses to overwrite an existing CA key.
func (ca *CA) WriteCA(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return fmt.Errorf("%s already exists; refusing to overwrite a CA key", filepath.Join(dir, CAKeyFile))
	}
	if err := os.WriteFile(filepath.Join(dir, CACertFile), ca.CertPEM, 0o644); err != nil {
		return fmt.Errorf("write CA certificate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), ca.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("write CA key: %w", err)
	}
	return nil
}

// IssueFiles issues a certificate for name and writes NAME.pem and
// NAME-key.pem (0600) into dir. It returns the two paths.
func (ca *CA) IssueFiles(name string, hosts []string, dir string) (certFile, keyFile string, err error) {
	return ca.IssueRoleFiles(name, RoleAgent, hosts, dir)
}

// IssueRoleFiles is IssueFiles for a certificate of role.
func (ca *CA) IssueRoleFiles(name, role string, hosts []string, dir string) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := ca.IssueRole(name, role, hosts)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", "", fmt.Errorf("create %s: %w", dir, err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("write certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("write key: %w", err)
	}
	return certFile, keyFile, nil
}

// LoadCA reads ca.pem and ca-key.pem from dir.
func LoadCA(dir string) (*CA, error) {
	return LoadCAFiles(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
}

// LoadCAFiles reads a CA certificate and its private key from two PEM
// files (for tools given the CA as files rather than a directory).
func LoadCAFiles(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA key pair from %s and %s: %w", certFile, keyFile, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("CA key %s is %T, want ECDSA", keyFile, pair.PrivateKey)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// IssueIdentity issues a certificate of role for name and returns it as an
// Identity, in memory only (nothing is written): for tools that act under
// many names at once, such as the load generator's simulated media
// servers.
func (ca *CA) IssueIdentity(name, role string, hosts []string) (*Identity, error) {
	certPEM, keyPEM, err := ca.IssueRole(name, role, hosts)
	if err != nil {
		return nil, err
	}
	return NewIdentity(ca.CertPEM, certPEM, keyPEM)
}

// Identity is a certificate with its key plus the CA pool that peers must
// chain to.
type Identity struct {
	Cert tls.Certificate
	Pool *x509.CertPool
	// Name is the certificate's CommonName.
	Name string
}

// LoadIdentity reads a CA certificate, a certificate and its key (PEM).
func LoadIdentity(caFile, certFile, keyFile string) (*Identity, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	return NewIdentity(caPEM, certPEM, keyPEM)
}

// NewIdentity builds an Identity from PEM bytes.
func NewIdentity(caPEM, certPEM, keyPEM []byte) (*Identity, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate found in PEM")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load key pair: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	pair.Leaf = leaf
	return &Identity{Cert: pair, Pool: pool, Name: leaf.Subject.CommonName}, nil
}

// ServerConfig returns a TLS 1.3 server configuration that requires a
// client certificate chaining to the CA. onReject, if non-nil, is called
// with ErrNoClientCert or ErrUntrusted (wrapped) for every refused
// handshake, so callers can count refusals.
func (id *Identity) ServerConfig(onReject func(error), alpn ...string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		// RequestClientCert (not Require...) so that a missing certificate
		// reaches VerifyConnection and is counted like a foreign one.
		ClientAuth: tls.RequestClientCert,
		NextProtos: alpn,
		VerifyConnection: func(cs tls.ConnectionState) error {
			err := verifyPeer(id.Pool, cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			if err != nil && onReject != nil {
				onReject(err)
			}
			return err
		},
	}
}

// ClientConfig returns a TLS 1.3 client configuration presenting this
// identity and accepting only servers whose certificate chains to the CA
// (host names are not checked; see the package comment).
func (id *Identity) ClientConfig(alpn ...string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		NextProtos:   alpn,
		ServerName:   "switchyard",
		// Verification happens in VerifyConnection against the cluster CA.
		InsecureSkipVerify: true, //nolint:gosec // chain verified below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(id.Pool, cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
		},
	}
}

// PeerName returns the CommonName of the verified peer certificate of a
// connection, or "" when there is none.
func PeerName(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	return cs.PeerCertificates[0].Subject.CommonName
}

func verifyPeer(pool *x509.CertPool, chain []*x509.Certificate, usage x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return ErrNoClientCert
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUntrusted, chain[0].Subject.CommonName, err)
	}
	return nil
}

func randSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
