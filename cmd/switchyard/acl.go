package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/pki"
)

// authFlags are the credential flags every client command takes.
type authFlags struct {
	token, tlsCA string
}

func (f *authFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.token, "token", os.Getenv(api.TokenEnv), "ACL token secret sent as 'Authorization: Bearer' (env SWITCHYARD_TOKEN; against a local dev cluster the one it printed is found by itself)")
	cmd.Flags().StringVar(&f.tlsCA, "tls-ca", os.Getenv(api.CACertEnv), "cluster CA (PEM) to verify the agents' HTTPS certificates with; given, the CLI speaks HTTPS (env SWITCHYARD_CACERT)")
}

// apply configures c with the flags; addrs find a dev cluster's token when
// no token is given.
func (f *authFlags) apply(cmd *cobra.Command, c *api.Client, addrs []string) error {
	tok, ca := f.token, f.tlsCA
	if tok == "" {
		tok = devFile(addrs, ".token")
	}
	if ca == "" {
		ca = devFile(addrs, ".ca")
	}
	c.WithToken(tok)
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return usagef(cmd, "--tls-ca: %v", err)
		}
		tc, err := pki.CAClientConfig(pem)
		if err != nil {
			return usagef(cmd, "--tls-ca %s: %v", f.tlsCA, err)
		}
		c.WithTLS(tc)
	}
	return nil
}

// devTokenDir holds, for each running dev cluster, one file per agent
// address with its operator token (.token) and one with the path of its CA
// (.ca); 0600, removed when the dev cluster stops.
func devTokenDir() string { return filepath.Join(os.TempDir(), "switchyard-dev-tokens") }

func devTokenFile(addr, ext string) string {
	return filepath.Join(devTokenDir(), strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(addr)+ext)
}

// devFile returns what a dev cluster wrote for one of addrs (loopback
// addresses only) in its ext file, or "".
func devFile(addrs []string, ext string) string {
	for _, a := range addrs {
		if !strings.HasPrefix(a, "127.") && !strings.HasPrefix(a, "localhost:") && !strings.HasPrefix(a, "[::1]") {
			continue
		}
		fi, err := os.Lstat(devTokenFile(a, ext))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
			continue
		}
		if b, err := os.ReadFile(devTokenFile(a, ext)); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// esc makes a value safe to print in a table: control characters (and
// other non-printables) are escaped as Go escapes them.
func esc(s string) string {
	clean := true
	for _, r := range s {
		if !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

func newACLCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acl",
		Short: "Manage API tokens (ACLs)",
		Long: `With --acl default-deny on the agents, every API request needs a token.
'switchyard acl bootstrap' creates the first operator token (once per
cluster); operators then create tokens for each role:

  operator   everything
  allocator  allocate, release, place rooms, and read
  reader     status, lists, metrics
  media      register, report and drain servers, allocate cascades, read

Secrets are shown once, when created; the cluster stores only their SHA-256.`,
	}
	bf := &clientFlags{}
	boot := &cobra.Command{
		Use:   "bootstrap",
		Short: "Create the first operator token (refused once done)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel, err := bf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			t, err := c.ACLBootstrap(ctx)
			if err != nil {
				return err
			}
			return printSecret(cmd, bf.json, t)
		},
	}
	bf.register(boot, true)

	token := &cobra.Command{Use: "token", Short: "Create, list and revoke tokens"}
	cf := &clientFlags{}
	var role, desc, server string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token (prints its secret once)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch role {
			case "operator", "allocator", "reader", "media":
			default:
				return usagef(cmd, "--role %q: want operator, allocator, reader or media", role)
			}
			if ttl < 0 || ttl > api.MaxTokenTTL {
				return usagef(cmd, "--ttl must be between 0 (no expiry) and %v", api.MaxTokenTTL)
			}
			if server != "" && role != "media" {
				return usagef(cmd, "--server binds a media token: it takes --role media")
			}
			if role == "media" && server == "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: a media token without --server acts for every media server; give each media node or sidecar a token bound to its id (--server ID)")
			}
			c, ctx, cancel, err := cf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			c.Retry = false // a retry after an unknown outcome could create two
			t, err := c.ACLCreateToken(ctx, api.CreateTokenRequest{Role: role, Description: desc, TTLMs: ttl.Milliseconds(), Server: server})
			if err != nil {
				return err
			}
			return printSecret(cmd, cf.json, t)
		},
	}
	cf.register(create, true)
	create.Flags().StringVar(&role, "role", "", "operator, allocator, reader or media (required)")
	create.Flags().StringVar(&desc, "description", "", "what the token is for (shown in lists and audit logs)")
	create.Flags().DurationVar(&ttl, "ttl", 0, "expire the token after this long (0: never)")
	create.Flags().StringVar(&server, "server", "", "with --role media: the only media server id the token may act as (register, report, drain, deregister); without it the token acts for any")

	lf := &clientFlags{}
	pf := &pageFlags{}
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (never their secrets), ordered by id; the table ends with the total",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pf.check(cmd); err != nil {
				return err
			}
			c, ctx, cancel, err := lf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			tokenID := func(t api.ACLToken) string { return t.ID }
			if lf.json {
				return printJSONPages(cmd, ctx, pf, "tokens", tokenID, c.ACLTokensPage)
			}
			return printTablePages(cmd, ctx, pf, "tokens", "ID\tROLE\tSERVER\tDESCRIPTION\tEXPIRES", tokenID, c.ACLTokensPage, func(t api.ACLToken) string {
				exp := "never"
				if t.ExpiresAtUnixMs > 0 {
					exp = time.UnixMilli(t.ExpiresAtUnixMs).UTC().Format(time.RFC3339)
				}
				srv := "-"
				if t.Server != "" {
					srv = esc(t.Server)
				} else if t.Role == "media" {
					srv = "(any)"
				}
				return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", esc(t.ID), esc(t.Role), srv, esc(t.Description), exp)
			})
		},
	}
	lf.register(list, true)
	pf.register(list, "tokens", "id")

	rf := &clientFlags{}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token (in force on each agent once it applies the entry)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := rf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			rv, err := c.ACLRevoke(ctx, args[0])
			if err != nil {
				return err
			}
			if rf.json {
				return printJSON(cmd.OutOrStdout(), rv)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", esc(args[0]))
			return nil
		},
	}
	rf.register(revoke, true)
	token.AddCommand(create, list, revoke)
	cmd.AddCommand(boot, token)
	return cmd
}

func printSecret(cmd *cobra.Command, asJSON bool, t api.ACLTokenSecret) error {
	if asJSON {
		return printJSON(cmd.OutOrStdout(), t)
	}
	exp := "never"
	if t.ExpiresAtUnixMs > 0 {
		exp = time.UnixMilli(t.ExpiresAtUnixMs).UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "id:          %s\nsecret:      %s\nrole:        %s\ndescription: %s\nexpires:     %s\n", t.ID, t.Secret, t.Role, esc(t.Description), exp)
	if t.Server != "" {
		fmt.Fprintf(cmd.OutOrStdout(), "server:      %s\n", esc(t.Server))
	}
	return nil
}
