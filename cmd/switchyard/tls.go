package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/pki"
)

func newTLSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Create the cluster CA and certificates for agents, media nodes and tools",
		Long: `Every QUIC connection (media nodes, load generator, agent to agent) and, when
the TLS flags are given, raft traffic run over mutual TLS with certificates
of one cluster CA:

  switchyard tls ca create --out certs
  switchyard tls cert create --ca-dir certs --name n1 --out certs
  switchyard agent ... --tls-ca certs/ca.pem --tls-cert certs/n1.pem --tls-key certs/n1-key.pem
  switchyard tls cert create --ca-dir certs --role media --name m1 --out certs
  switchyard media --id m1 ... --tls-ca certs/ca.pem --tls-cert certs/m1.pem --tls-key certs/m1-key.pem

Name agent certificates after the agent's --id: agents accept forwarded
load reports only from a peer whose certificate names a cluster member.
Give each media node (and sidecar) a media certificate named after its
--id: agents take a media server's requests only from a media certificate
naming that server id, never from an agent certificate.`,
	}
	ca := &cobra.Command{Use: "ca", Short: "Manage the cluster CA"}
	var caOut, caName string
	caCreate := &cobra.Command{
		Use:   "create",
		Short: "Create a CA: writes ca.pem and ca-key.pem into --out",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if caOut == "" {
				return usagef(cmd, "--out is required")
			}
			c, err := pki.NewCA(caName)
			if err != nil {
				return err
			}
			if err := c.WriteCA(caOut); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s\n", filepath.Join(caOut, pki.CACertFile), filepath.Join(caOut, pki.CAKeyFile))
			return nil
		},
	}
	caCreate.Flags().StringVar(&caOut, "out", "", "directory to write ca.pem and ca-key.pem into (required)")
	caCreate.Flags().StringVar(&caName, "common-name", "switchyard cluster CA", "the CA's common name")
	ca.AddCommand(caCreate)

	cert := &cobra.Command{Use: "cert", Short: "Issue certificates"}
	var caDir, name, out, hosts, role string
	certCreate := &cobra.Command{
		Use:   "create",
		Short: "Issue a certificate: writes NAME.pem and NAME-key.pem into --out",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if caDir == "" || name == "" || out == "" {
				return usagef(cmd, "--ca-dir, --name and --out are required")
			}
			if strings.ContainsAny(name, `/\`) {
				return usagef(cmd, "--name %q must not contain path separators", name)
			}
			c, err := pki.LoadCA(caDir)
			if err != nil {
				return err
			}
			var hs []string
			for _, h := range strings.Split(hosts, ",") {
				if h = strings.TrimSpace(h); h != "" {
					hs = append(hs, h)
				}
			}
			if !pki.ValidRole(role) {
				return usagef(cmd, "--role %q: want agent or media", role)
			}
			cf, kf, err := c.IssueRoleFiles(name, role, hs, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s\n", cf, kf)
			return nil
		},
	}
	certCreate.Flags().StringVar(&caDir, "ca-dir", "", "directory holding ca.pem and ca-key.pem (required)")
	certCreate.Flags().StringVar(&name, "name", "", "certificate name: the agent id, or the media node / tool name (required)")
	certCreate.Flags().StringVar(&out, "out", "", "directory to write NAME.pem and NAME-key.pem into (required)")
	certCreate.Flags().StringVar(&hosts, "hosts", "", "extra comma-separated DNS names / IPs for the certificate")
	certCreate.Flags().StringVar(&role, "role", pki.RoleAgent, "agent (raft, agent-to-agent; never a media server) or media (a media node or sidecar: it may act only as the server id --name); written as the URI SAN spiffe://switchyard/<role>/<name>")
	cert.AddCommand(certCreate)
	cmd.AddCommand(ca, cert)
	cmd.AddCommand(newTLSInitCmd()) // tlsinit.go
	return cmd
}

// tlsFlags are the --tls-* flags shared by agent and loadgen.
type tlsFlags struct{ ca, cert, key string }

func (f *tlsFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.ca, "tls-ca", "", "cluster CA certificate (PEM)")
	cmd.Flags().StringVar(&f.cert, "tls-cert", "", "this process's certificate (PEM), signed by the cluster CA")
	cmd.Flags().StringVar(&f.key, "tls-key", "", "the certificate's private key (PEM)")
}

// identity loads the TLS identity, nil when no flag is given.
func (f *tlsFlags) identity(cmd *cobra.Command) (*pki.Identity, error) {
	if f.ca == "" && f.cert == "" && f.key == "" {
		return nil, nil
	}
	if f.ca == "" || f.cert == "" || f.key == "" {
		return nil, usagef(cmd, "--tls-ca, --tls-cert and --tls-key go together")
	}
	return pki.LoadIdentity(f.ca, f.cert, f.key)
}
