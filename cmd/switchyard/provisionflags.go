package main

import (
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/provision"
)

// provisionerFlags choose how an agent, when it leads, starts media servers
// that no existing server can replace. The provisioning
// parameters (expected capacity, timeout, retirement) are part of the
// replicated policy ('switchyard policy set'); these flags only say how.
type provisionerFlags struct {
	kind               string
	command            string
	args               []string
	deprovisionCommand string
	webhook            string
	webhookHeaders     []string
	image, network     string
	dockerRunArgs      []string
	mediaHost          string
	mediaArgs          []string
}

func (p *provisionerFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&p.kind, "provisioner", "none", "how the leader starts media servers when none fits: none, exec, webhook, docker or local")
	fl.StringVar(&p.command, "provision-command", "", "exec: command run with SWITCHYARD_* env vars and the request as JSON on stdin")
	fl.StringSliceVar(&p.args, "provision-arg", nil, "exec: argument for --provision-command (repeatable)")
	fl.StringVar(&p.deprovisionCommand, "deprovision-command", "", "exec: command for retiring a server (default: --provision-command with SWITCHYARD_ACTION=deprovision)")
	fl.StringVar(&p.webhook, "provision-webhook", "", "webhook: URL that receives the request as a JSON POST")
	fl.StringSliceVar(&p.webhookHeaders, "provision-webhook-header", nil, "webhook: 'Name: value' header to send (repeatable)")
	fl.StringVar(&p.image, "provision-image", "", "docker: the switchyard image media node containers run")
	fl.StringVar(&p.network, "provision-docker-network", "host", "docker: container network")
	fl.StringSliceVar(&p.dockerRunArgs, "provision-docker-arg", nil, "docker: extra 'docker run' argument (repeatable)")
	fl.StringVar(&p.mediaHost, "provision-media-host", "127.0.0.1", "docker/local: address provisioned media nodes listen on")
	fl.StringSliceVar(&p.mediaArgs, "provision-media-arg", nil, "docker/local: extra 'switchyard media' argument (repeatable)")
}

// provider builds the chosen provider; nil for none.
func (p *provisionerFlags) provider(cmd *cobra.Command) (provision.Provider, error) {
	switch p.kind {
	case "", "none":
		return nil, nil
	case "exec":
		if p.command == "" {
			return nil, usagef(cmd, "--provisioner exec needs --provision-command")
		}
		return &provision.Exec{Command: p.command, Args: p.args, DeprovisionCommand: p.deprovisionCommand}, nil
	case "webhook":
		if !strings.HasPrefix(p.webhook, "http://") && !strings.HasPrefix(p.webhook, "https://") {
			return nil, usagef(cmd, "--provisioner webhook needs --provision-webhook http(s)://...")
		}
		h := http.Header{}
		for _, kv := range p.webhookHeaders {
			k, v, ok := strings.Cut(kv, ":")
			if !ok || strings.TrimSpace(k) == "" {
				return nil, usagef(cmd, "--provision-webhook-header %q: want 'Name: value'", kv)
			}
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		return &provision.Webhook{URL: p.webhook, Header: h}, nil
	case "docker":
		if p.image == "" {
			return nil, usagef(cmd, "--provisioner docker needs --provision-image")
		}
		return &provision.Docker{Image: p.image, Network: p.network, Host: p.mediaHost, RunArgs: p.dockerRunArgs, ExtraArgs: p.mediaArgs}, nil
	case "local":
		return &provision.Local{Host: p.mediaHost, ExtraArgs: p.mediaArgs}, nil
	}
	return nil, usagef(cmd, "--provisioner %q: want none, exec, webhook, docker or local", p.kind)
}
