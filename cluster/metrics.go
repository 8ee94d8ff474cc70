package cluster

import "github.com/prometheus/client_golang/prometheus"

// metrics are the node's Prometheus instruments. They live on the Node (no
// package globals) and are registered by whoever serves /metrics.
type metrics struct {
	allocations *prometheus.CounterVec // by outcome
	entryCmds   prometheus.Histogram
	commit      prometheus.Histogram
	leaderships prometheus.Counter
	// clock.go
	clockOffset   prometheus.Gauge
	guardedStamps prometheus.Counter
	// failover.go
	fastFailovers prometheus.Counter
	// silentFailovers: elections started early because a majority of
	// voters had not heard from the leader for a heartbeat timeout.
	silentFailovers prometheus.Counter
	// provision.go: one per pass of the provisioner's loop, so a test (or an
	// operator) can tell that the leader looked again without waiting a
	// fixed time.
	provisionerPasses prometheus.Counter
	// reclaims counts elections started at once by a leader that had
	// stepped down because its lease ran out (failover.go).
	reclaims prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_allocations_total",
			Help: "Allocation requests decided on this node while it led, by outcome (granted, duplicate, refused, unknown).",
		}, []string{"outcome"}),
		entryCmds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchyard_log_entry_commands",
			Help:    "Commands packed into each log entry the leader proposed.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchyard_commit_seconds",
			Help:    "Time from proposing a log entry to its result on the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		leaderships: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_leaderships_total",
			Help: "Times this node became a ready leader.",
		}),
		clockOffset: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_clock_offset_seconds",
			Help: "This node's wall clock minus the time the leader stamps into the log (minimum over recent entries; positive: ahead).",
		}),
		provisionerPasses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_provisioner_passes_total",
			Help: "Passes of the leader's provisioning loop (attach, claim, answer, retire).",
		}),
		fastFailovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_fast_failovers_total",
			Help: "Elections this node started early because the silent leader's raft port refused connections (its process was gone).",
		}),
		silentFailovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_silent_leader_failovers_total",
			Help: "Elections this node started early because a majority of voters (itself included) had not heard from the leader for a heartbeat timeout (a paused or cut-off leader).",
		}),
		reclaims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_lease_reclaims_total",
			Help: "Elections this node started at once after stepping down as leader because its lease ran out (no other node had taken over).",
		}),
		guardedStamps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_clock_guarded_stamps_total",
			Help: "Log entries this node stamped, as leader, with the log's time instead of its wall clock, which disagreed by more than the tolerance.",
		}),
	}
}

// Collectors returns the node's metrics, including gauges read from raft
// at scrape time, for registration with a Prometheus registry.
func (n *Node) Collectors() []prometheus.Collector {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	return []prometheus.Collector{
		n.m.allocations, n.m.entryCmds, n.m.commit, n.m.leaderships, n.m.clockOffset, n.m.guardedStamps, n.m.fastFailovers, n.m.silentFailovers, n.m.provisionerPasses, n.m.reclaims,
		gauge("switchyard_raft_term", "Current raft term.", func() float64 { return float64(n.raft.CurrentTerm()) }),
		gauge("switchyard_raft_commit_index", "Raft commit index.", func() float64 { return float64(n.raft.CommitIndex()) }),
		gauge("switchyard_raft_applied_index", "Index of the last entry applied to the FSM.", func() float64 { return float64(n.raft.AppliedIndex()) }),
		gauge("switchyard_is_leader", "1 while this node is the ready leader.", func() float64 {
			if n.IsLeader() {
				return 1
			}
			return 0
		}),
		gauge("switchyard_raft_voters", "Voters in the raft configuration.", func() float64 { return float64(len(n.voters())) }),
	}
}

// countAllocation records the outcome of one allocation answer.
func (m *metrics) countAllocation(r opResult) {
	outcome := "granted"
	switch {
	case r.err != nil:
		outcome = "unknown"
	case r.res.GetErrorCode() != "":
		outcome = "refused"
	case r.res.GetDuplicate():
		outcome = "duplicate"
	}
	m.allocations.WithLabelValues(outcome).Inc()
}
