package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/pki"
)

// newTLSInitCmd is `switchyard tls init`: the CA and every certificate a
// deployment needs in one idempotent step, for init containers (the image
// has no shell to chain `tls ca create` and `tls cert create`).
func newTLSInitCmd() *cobra.Command {
	var out, names, media, hosts, commonName string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the CA (unless --out has one) and a certificate for each of --names (unless present)",
		Long: `Create everything a deployment's mutual TLS needs in one step, idempotently:
the CA in --out unless ca.pem and ca-key.pem are there, then NAME.pem and
NAME-key.pem for each of --names (agent certificates) and --media (media
certificates, each bound to the server id it names) unless both are there.
Running it again changes nothing, so it suits an init container or job:

  switchyard tls init --out /certs --names n1,n2,n3 --media m1,m2`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" || (names == "" && media == "") {
				return usagef(cmd, "--out and --names or --media are required")
			}
			type cert struct{ name, role string }
			var list []cert
			var hs []string
			for _, g := range []struct{ flag, names, role string }{{"--names", names, pki.RoleAgent}, {"--media", media, pki.RoleMedia}} {
				for _, n := range strings.Split(g.names, ",") {
					if n = strings.TrimSpace(n); n != "" {
						if strings.ContainsAny(n, `/\`) {
							return usagef(cmd, "%s: %q must not contain path separators", g.flag, n)
						}
						list = append(list, cert{n, g.role})
					}
				}
			}
			for _, h := range strings.Split(hosts, ",") {
				if h = strings.TrimSpace(h); h != "" {
					hs = append(hs, h)
				}
			}
			w := cmd.OutOrStdout()
			ca, err := pki.LoadCA(out)
			switch {
			case err == nil:
				fmt.Fprintf(w, "CA: kept %s\n", filepath.Join(out, pki.CACertFile))
			case exists(filepath.Join(out, pki.CACertFile)) || exists(filepath.Join(out, pki.CAKeyFile)):
				return fmt.Errorf("%s holds a partial or unreadable CA: %w", out, err)
			default:
				if ca, err = pki.NewCA(commonName); err != nil {
					return err
				}
				if err := ca.WriteCA(out); err != nil {
					return err
				}
				fmt.Fprintf(w, "CA: wrote %s\n", filepath.Join(out, pki.CACertFile))
			}
			for _, c := range list {
				cf, kf := filepath.Join(out, c.name+".pem"), filepath.Join(out, c.name+"-key.pem")
				if exists(cf) && exists(kf) {
					fmt.Fprintf(w, "%s: kept %s\n", c.name, cf)
					continue
				}
				if _, _, err := ca.IssueRoleFiles(c.name, c.role, append([]string{c.name}, hs...), out); err != nil {
					return err
				}
				fmt.Fprintf(w, "%s: wrote %s (%s)\n", c.name, cf, c.role)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory for the CA and the certificates (required)")
	cmd.Flags().StringVar(&names, "names", "", "comma-separated names of agent certificates (agent ids, tools)")
	cmd.Flags().StringVar(&media, "media", "", "comma-separated names of media certificates (media node and sidecar server ids)")
	cmd.Flags().StringVar(&hosts, "hosts", "", "extra comma-separated DNS names / IPs for every certificate")
	cmd.Flags().StringVar(&commonName, "common-name", "switchyard cluster CA", "the CA's common name, when one is created")
	return cmd
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, fs.ErrNotExist)
}
