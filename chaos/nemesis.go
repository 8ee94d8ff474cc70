package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"
)

// Env is what a nemesis acts on.
type Env struct {
	Target  Target
	Net     Network // nil when the target cannot cut links
	History *History
	Rand    *rand.Rand
	Log     *slog.Logger
	// Notes, when set, receives remarks for the summary (e.g. how a
	// fault had to be emulated).
	Notes func(string)
}

// Heal undoes a fault.
type Heal func(ctx context.Context) error

// Nemesis injects one kind of fault.
type Nemesis interface {
	// Name is the fault kind counted in the summary.
	Name() string
	// Inject applies the fault (recording it in the history) and returns
	// how to heal it. A nemesis whose fault is over when Inject returns
	// (a rolling restart) returns a no-op heal.
	Inject(ctx context.Context, e *Env) (Heal, error)
}

func noHeal(context.Context) error { return nil }

// pick returns the current leader (leader=true) or a random
// running node.
func pick(ctx context.Context, e *Env, leader bool) (string, error) {
	if leader {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return FindLeader(lctx, e.Target)
	}
	var up []string
	for _, id := range e.Target.Nodes() {
		if e.Target.Running(id) {
			up = append(up, id)
		}
	}
	if len(up) == 0 {
		return "", errors.New("no running node")
	}
	return up[e.Rand.IntN(len(up))], nil
}

// Kill SIGKILLs the leader (Leader) or a random node, and restarts it on
// heal.
type Kill struct{ Leader bool }

// Name implements Nemesis.
func (k Kill) Name() string {
	if k.Leader {
		return "kill-leader"
	}
	return "kill-random"
}

// Inject implements Nemesis.
func (k Kill) Inject(ctx context.Context, e *Env) (Heal, error) {
	id, err := pick(ctx, e, k.Leader)
	if err != nil {
		return nil, err
	}
	// The fault is recorded once the node is dead (docker kill takes a
	// while to get there), so unavailability counts from its death.
	if err := e.Target.Kill(ctx, id); err != nil {
		return nil, err
	}
	e.History.AddFault(Fault{Kind: k.Name(), Nodes: []string{id}, Leader: k.Leader})
	return func(ctx context.Context) error {
		e.History.AddFault(Fault{Kind: "restart", Nodes: []string{id}})
		return e.Target.Start(ctx, id)
	}, nil
}

// Pause SIGSTOPs the leader (Leader) or a random node; heal SIGCONTs it.
// Held longer than the election timeout, the others elect a new leader
// while the paused one still believes it leads.
type Pause struct{ Leader bool }

// Name implements Nemesis.
func (p Pause) Name() string {
	if p.Leader {
		return "pause-leader"
	}
	return "pause-random"
}

// Inject implements Nemesis.
func (p Pause) Inject(ctx context.Context, e *Env) (Heal, error) {
	id, err := pick(ctx, e, p.Leader)
	if err != nil {
		return nil, err
	}
	if err := e.Target.Pause(ctx, id); err != nil {
		return nil, err
	}
	e.History.AddFault(Fault{Kind: p.Name(), Nodes: []string{id}, Leader: p.Leader})
	return func(ctx context.Context) error {
		e.History.AddFault(Fault{Kind: "resume", Nodes: []string{id}})
		return e.Target.Resume(ctx, id)
	}, nil
}

// RollingRestart restarts every node one by one (SIGTERM, start, wait
// until the cluster is healthy again) in random order.
type RollingRestart struct{}

// Name implements Nemesis.
func (RollingRestart) Name() string { return "rolling-restart" }

// Inject implements Nemesis.
func (r RollingRestart) Inject(ctx context.Context, e *Env) (Heal, error) {
	ids := e.Target.Nodes()
	e.Rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	e.History.AddFault(Fault{Kind: r.Name(), Nodes: ids})
	for _, id := range ids {
		if err := e.Target.Stop(ctx, id); err != nil {
			return nil, err
		}
		if err := e.Target.Start(ctx, id); err != nil {
			return nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := WaitHealthy(wctx, e.Target)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("rolling restart of %s: %w", id, err)
		}
	}
	return noHeal, nil
}

// Combo injects several nemeses at once and heals them in reverse order.
type Combo []Nemesis

// Name implements Nemesis.
func (c Combo) Name() string {
	var s string
	for i, n := range c {
		if i > 0 {
			s += "+"
		}
		s += n.Name()
	}
	return s
}

// Inject implements Nemesis.
func (c Combo) Inject(ctx context.Context, e *Env) (Heal, error) {
	var heals []Heal
	healAll := func(ctx context.Context) error {
		var errs []error
		for _, h := range slices.Backward(heals) {
			errs = append(errs, h(ctx))
		}
		return errors.Join(errs...)
	}
	for _, n := range c {
		h, err := n.Inject(ctx, e)
		if err != nil {
			return nil, errors.Join(err, healAll(ctx))
		}
		heals = append(heals, h)
	}
	return healAll, nil
}

// PartitionKind selects how Partition splits the cluster.
type PartitionKind string

// Partition kinds.
const (
	// IsolateLeader cuts the leader off from every other node.
	IsolateLeader PartitionKind = "partition-leader"
	// MajorityMinority splits the nodes randomly into a majority and a
	// minority.
	MajorityMinority PartitionKind = "partition-split"
	// Bridge splits the nodes into two halves that both see one node (the
	// bridge), e.g. {a,b,c} {c,d,e}.
	Bridge PartitionKind = "partition-bridge"
)

// Partition cuts links (needs a Network); heal restores them.
type Partition struct{ Kind PartitionKind }

// Name implements Nemesis.
func (p Partition) Name() string { return string(p.Kind) }

// Inject implements Nemesis.
func (p Partition) Inject(ctx context.Context, e *Env) (Heal, error) {
	if e.Net == nil {
		return nil, errors.New("partition needs a network target")
	}
	ids := e.Target.Nodes()
	e.Rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	var groups [][]string
	leader := false
	switch p.Kind {
	case IsolateLeader:
		l, err := pick(ctx, e, true)
		if err != nil {
			return nil, err
		}
		leader = true
		rest := slices.DeleteFunc(ids, func(s string) bool { return s == l })
		groups = [][]string{{l}, rest}
	case MajorityMinority:
		m := len(ids)/2 + 1
		groups = [][]string{ids[:m], ids[m:]}
	case Bridge:
		h := len(ids) / 2
		groups = [][]string{ids[:h+1], ids[h:]}
	default:
		return nil, fmt.Errorf("unknown partition %q", p.Kind)
	}
	e.History.AddFault(Fault{Kind: p.Name(), Nodes: ids, Leader: leader, Note: fmt.Sprint(groups)})
	if err := e.Net.Partition(ctx, groups); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		e.History.AddFault(Fault{Kind: "heal-network"})
		return e.Net.Heal(ctx)
	}, nil
}

// Blackhole cuts the leader off from everyone, peers and clients (needs a
// Network): packets are dropped, not refused, so clients and followers
// learn of it only through their timeouts, as with a cut cable. Heal
// restores the links; the old leader finds itself deposed.
type Blackhole struct{}

// Name implements Nemesis.
func (Blackhole) Name() string { return "blackhole-leader" }

// Inject implements Nemesis.
func (b Blackhole) Inject(ctx context.Context, e *Env) (Heal, error) {
	if e.Net == nil {
		return nil, errors.New("blackhole needs a network target")
	}
	id, err := pick(ctx, e, true)
	if err != nil {
		return nil, err
	}
	if err := e.Net.Blackhole(ctx, id); err != nil {
		return nil, err
	}
	e.History.AddFault(Fault{Kind: b.Name(), Nodes: []string{id}, Leader: true})
	return func(ctx context.Context) error {
		e.History.AddFault(Fault{Kind: "heal-network"})
		return e.Net.Heal(ctx)
	}, nil
}

// Netem degrades every link with a tc netem spec; heal removes it.
type Netem struct {
	Label, Spec string
}

// Name implements Nemesis.
func (n Netem) Name() string { return "netem-" + n.Label }

// Inject implements Nemesis.
func (n Netem) Inject(ctx context.Context, e *Env) (Heal, error) {
	if e.Net == nil {
		return nil, errors.New("netem needs a network target")
	}
	applied, err := e.Net.Netem(ctx, n.Spec)
	if err != nil {
		return nil, err
	}
	e.History.AddFault(Fault{Kind: n.Name(), Note: applied})
	e.Log.Info("netem", "spec", n.Spec, "applied", applied)
	if e.Notes != nil {
		e.Notes(n.Name() + ": " + applied)
	}
	return func(ctx context.Context) error {
		e.History.AddFault(Fault{Kind: "heal-network"})
		return e.Net.Heal(ctx)
	}, nil
}
