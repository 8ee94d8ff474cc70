package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/proccluster"
)

// Target is a cluster of allocator agents the runner can hurt. Every
// method may be called from any goroutine.
type Target interface {
	// Name says what kind of cluster this is (processes, netns, docker).
	Name() string
	// Nodes lists the node ids.
	Nodes() []string
	// HTTPAddr is the address clients reach node id's admin API at.
	HTTPAddr(id string) string
	// Kill SIGKILLs node id and waits until it is gone.
	Kill(ctx context.Context, id string) error
	// Stop SIGTERMs node id (graceful: a leader hands over) and waits.
	Stop(ctx context.Context, id string) error
	// Start (re)starts node id with its own data dir.
	Start(ctx context.Context, id string) error
	// Pause freezes node id (SIGSTOP); Resume thaws it (SIGCONT).
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	// Running reports whether node id's process is alive.
	Running(id string) bool
	// Logs returns the tail of every node's log.
	Logs() string
}

// Network can cut and degrade the links between nodes. Implementations
// affect only traffic between agents, never between the test's clients
// and the agents (as in Jepsen, clients see every node; a node cut off
// from the leader forwards nothing).
type Network interface {
	// Partition lets each node talk only to the nodes of the groups it is
	// in; a node in two groups is a bridge. Nodes in no group are cut off
	// from everyone.
	Partition(ctx context.Context, groups [][]string) error
	// Netem applies a tc netem spec (e.g. "delay 50ms 20ms loss 5%") to
	// every node's link, and says what it applied (an implementation may
	// have to emulate part of it).
	Netem(ctx context.Context, spec string) (string, error)
	// Blackhole drops every packet to and from node id, its peers' and
	// clients' alike, as a cut cable or a hung host's network would:
	// nothing is refused, everything waits for a timeout.
	Blackhole(ctx context.Context, id string) error
	// Heal removes every partition, blackhole and netem rule.
	Heal(ctx context.Context) error
}

// ProcTarget adapts a proccluster.Cluster (agents as OS processes of the
// real binary, optionally each inside its own network namespace).
type ProcTarget struct {
	C    *proccluster.Cluster
	Kind string
}

// Name implements Target.
func (p *ProcTarget) Name() string {
	if p.Kind == "" {
		return "processes"
	}
	return p.Kind
}

func (p *ProcTarget) proc(id string) (*proccluster.Proc, error) {
	for _, n := range p.C.Nodes {
		if n.ID == id {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no node %q", id)
}

// Nodes implements Target.
func (p *ProcTarget) Nodes() []string {
	var ids []string
	for _, n := range p.C.Nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

// HTTPAddr implements Target.
func (p *ProcTarget) HTTPAddr(id string) string {
	n, err := p.proc(id)
	if err != nil {
		return ""
	}
	return n.HTTPAddr
}

// waitExit waits for n's process to be reaped.
func waitExit(ctx context.Context, n *proccluster.Proc) error {
	done := n.Done()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for %s to exit: %w", n.ID, ctx.Err())
	}
}

// Kill implements Target.
func (p *ProcTarget) Kill(ctx context.Context, id string) error {
	n, err := p.proc(id)
	if err != nil {
		return err
	}
	p.C.Signal(n, syscall.SIGCONT)
	p.C.Signal(n, syscall.SIGKILL)
	return waitExit(ctx, n)
}

// Stop implements Target; a process still alive after 15 s is killed.
func (p *ProcTarget) Stop(ctx context.Context, id string) error {
	n, err := p.proc(id)
	if err != nil {
		return err
	}
	p.C.Signal(n, syscall.SIGCONT)
	p.C.Signal(n, syscall.SIGTERM)
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := waitExit(sctx, n); err != nil {
		return errors.Join(fmt.Errorf("SIGTERM: %w", err), p.Kill(ctx, id))
	}
	return nil
}

// Start implements Target.
func (p *ProcTarget) Start(_ context.Context, id string) error {
	n, err := p.proc(id)
	if err != nil {
		return err
	}
	if n.Running() {
		return nil
	}
	return p.C.StartDir(n, n.DataDir)
}

// Pause implements Target.
func (p *ProcTarget) Pause(_ context.Context, id string) error {
	n, err := p.proc(id)
	if err != nil {
		return err
	}
	p.C.Signal(n, syscall.SIGSTOP)
	return nil
}

// Resume implements Target.
func (p *ProcTarget) Resume(_ context.Context, id string) error {
	n, err := p.proc(id)
	if err != nil {
		return err
	}
	p.C.Signal(n, syscall.SIGCONT)
	return nil
}

// Running implements Target.
func (p *ProcTarget) Running(id string) bool {
	n, err := p.proc(id)
	return err == nil && n.Running()
}

// Logs implements Target.
func (p *ProcTarget) Logs() string { return p.C.Logs() }

// SaveLogs copies every node's whole log file into dir.
func (p *ProcTarget) SaveLogs(dir string) []string {
	var out []string
	for _, n := range p.C.Nodes {
		b, err := os.ReadFile(n.LogPath)
		if err != nil {
			continue
		}
		path := filepath.Join(dir, n.ID+".log")
		if os.WriteFile(path, b, 0o644) == nil {
			out = append(out, path)
		}
	}
	return out
}

// status asks one node for its status, without retries.
func status(ctx context.Context, addr string, timeout time.Duration) (NodeState, string, string, error) {
	cl := api.NewClient(addr)
	cl.Retry = false
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := cl.Status(sctx)
	if err != nil {
		return NodeState{Err: err.Error()}, "", "", err
	}
	return NodeState{ID: st.ID, AppliedIndex: st.AppliedIndex, StateHash: st.StateHash, Term: st.Term}, st.State, st.Leader, nil
}

// Statuses asks every node of t for its status (errors recorded per node).
func Statuses(ctx context.Context, t Target) []NodeState {
	ids := t.Nodes()
	out := make([]NodeState, len(ids))
	done := make(chan struct{}, len(ids))
	for i, id := range ids {
		go func() {
			defer func() { done <- struct{}{} }()
			ns, _, _, _ := status(ctx, t.HTTPAddr(id), 2*time.Second)
			ns.ID = id
			out[i] = ns
		}()
	}
	for range ids {
		<-done
	}
	return out
}

// Leader polls the running nodes until one of them is leader and every
// running node that answers names it, and returns its id.
func Leader(ctx context.Context, t Target) (string, error) {
	for {
		leader, agree, answered := "", true, 0
		for _, id := range t.Nodes() {
			if !t.Running(id) {
				continue
			}
			_, state, lid, err := status(ctx, t.HTTPAddr(id), 500*time.Millisecond)
			if err != nil {
				continue
			}
			answered++
			if lid == "" || (leader != "" && lid != leader) {
				agree = false
			}
			if leader == "" {
				leader = lid
			}
			if state == "Leader" && lid != id {
				agree = false
			}
		}
		if agree && leader != "" && answered > len(t.Nodes())/2 && t.Running(leader) {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no agreed leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// FindLeader polls the running nodes until one reports itself leader and
// returns the one with the highest term. Unlike Leader it needs no
// agreement, so it works on a degraded network.
func FindLeader(ctx context.Context, t Target) (string, error) {
	for {
		best, term := "", uint64(0)
		for _, id := range t.Nodes() {
			if !t.Running(id) {
				continue
			}
			ns, state, _, err := status(ctx, t.HTTPAddr(id), 2*time.Second)
			if err == nil && state == "Leader" && ns.Term >= term {
				best, term = id, ns.Term
			}
		}
		if best != "" {
			return best, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitHealthy polls until every node is running, answers, and names the
// same leader.
func WaitHealthy(ctx context.Context, t Target) error {
	for {
		ok, leader := true, ""
		for _, id := range t.Nodes() {
			if !t.Running(id) {
				ok = false
				break
			}
			_, _, lid, err := status(ctx, t.HTTPAddr(id), 500*time.Millisecond)
			if err != nil || lid == "" || (leader != "" && lid != leader) {
				ok = false
				break
			}
			leader = lid
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not healthy: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
