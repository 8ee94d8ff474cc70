package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// Exec runs a command for every action. The spec is passed as SWITCHYARD_*
// environment variables (see Spec.Env) and as JSON on stdin; exit status 0
// means accepted. A command that fails reports its exit status and the
// tail of its stderr; one that outlives the context is killed.
type Exec struct {
	// Command and Args to run for provisioning. Required.
	Command string
	Args    []string
	// DeprovisionCommand/Args run for deprovisioning; empty runs Command
	// with SWITCHYARD_ACTION=deprovision.
	DeprovisionCommand string
	DeprovisionArgs    []string
	// Env adds variables to the command's environment (on top of ours).
	Env []string
}

// Name implements Provider.
func (e *Exec) Name() string { return "exec" }

// Provision implements Provider.
func (e *Exec) Provision(ctx context.Context, spec Spec) error {
	spec.Action = ActionProvision
	return e.run(ctx, e.Command, e.Args, spec)
}

// Deprovision implements Provider.
func (e *Exec) Deprovision(ctx context.Context, spec Spec) error {
	spec.Action = ActionDeprovision
	if e.DeprovisionCommand != "" {
		return e.run(ctx, e.DeprovisionCommand, e.DeprovisionArgs, spec)
	}
	return e.run(ctx, e.Command, e.Args, spec)
}

func (e *Exec) run(ctx context.Context, name string, args []string, spec Spec) error {
	if name == "" {
		return fmt.Errorf("%w: exec: no command configured", ErrProvider)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(append(os.Environ(), e.Env...), spec.Env()...)
	cmd.Stdin = bytes.NewReader(spec.JSON())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Children that keep the output pipe open (a media node started in the
	// background) must not hold us: one second after the command exits we
	// stop reading its output.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		// The command exited 0 but left a child holding its output open
		// (e.g. it started the media node in the background): accepted.
		err = nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: exec %s (%s %s): gave up after the deadline: %w", ErrProvider, name, spec.Action, spec.ServerID, ctx.Err())
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("%w: exec %s (%s %s): %v: %s", ErrProvider, name, spec.Action, spec.ServerID, ee, tail(out.Bytes(), 512))
		}
		return fmt.Errorf("%w: exec %s (%s %s): %w", ErrProvider, name, spec.Action, spec.ServerID, err)
	}
	return nil
}
