package media

import (
	"context"
	"fmt"
	"time"
)

// Drain stops new sessions landing on this node (WHIP/WHEP answer 503),
// tells the cluster (Cluster.Drain), waits until every session has ended
// on its own, then deregisters the node. It returns when deregistered or
// when ctx ends (the node then stays draining). Calling it again, or while
// a drain started by the cluster is running, waits for the same outcome.
func (n *Node) Drain(ctx context.Context) error {
	n.mu.Lock()
	first := !n.draining
	n.draining = true
	n.mu.Unlock()
	if first {
		n.log.Info("draining")
		n.goBackground(func() { n.finishDrain(n.ctx) })
	}
	select {
	case <-n.drained:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain of %s: %w", n.cfg.ID, ctx.Err())
	}
}

// Drained is closed once a drain has deregistered the node.
func (n *Node) Drained() <-chan struct{} { return n.drained }

func (n *Node) finishDrain(ctx context.Context) {
	for {
		if err := n.cl.Drain(ctx); err == nil {
			break
		} else if !n.retryWait(ctx, err, "mark draining") {
			return
		}
	}
	for {
		n.mu.Lock()
		left, ch := len(n.sessions), n.sessChange
		n.mu.Unlock()
		if left == 0 {
			break
		}
		n.log.Info("drain: waiting for sessions to end", "sessions", left)
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
	for {
		err := n.cl.Deregister(ctx)
		if err == nil {
			break
		}
		if !n.retryWait(ctx, err, "deregister") {
			return
		}
	}
	n.log.Info("drained and deregistered")
	close(n.drained)
}

func (n *Node) retryWait(ctx context.Context, err error, what string) bool {
	n.log.Warn("drain: "+what+" failed, retrying", "err", err)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Second):
		return true
	}
}

// watchState polls the node's state in the cluster and starts a drain when
// an operator drained it (switchyard server drain).
func (n *Node) watchState() {
	t := time.NewTicker(n.cfg.StatePoll)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		st, err := n.cl.State(ctx)
		cancel()
		if err != nil || st != "draining" {
			continue
		}
		n.mu.Lock()
		already := n.draining
		n.mu.Unlock()
		if !already {
			n.log.Info("cluster says draining: starting drain")
			n.goBackground(func() { _ = n.Drain(n.ctx) })
		}
		return
	}
}
