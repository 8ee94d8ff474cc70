package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/ui"
)

// overviewTimeout bounds the fetch of one member's stats for /v1/overview;
// a member that does not answer in time is reported unreachable.
const overviewTimeout = 1500 * time.Millisecond

// health is the handler's operations state.
type health struct {
	shuttingDown atomic.Bool
	started      time.Time
	// shutdown is closed by SetShuttingDown (ends watch streams).
	shutdown     chan struct{}
	shutdownOnce sync.Once
	// hub serves GET /v1/watch (watch.go), created on first use.
	hubOnce sync.Once
	hub     *watchHub
}

// registerOpsRoutes adds the operations endpoints and gauges (see above).
func (s *Handler) registerOpsRoutes() {
	s.health = &health{started: time.Now(), shutdown: make(chan struct{})}
	s.local("GET /v1/health/live", s.live)
	s.local("GET /v1/health/ready", s.ready)
	s.local("GET /v1/stats", s.stats)
	s.local("GET /v1/overview", s.overview)
	s.mux.HandleFunc("GET /v1/watch", func(w http.ResponseWriter, r *http.Request) {
		rec := &streamRecorder{ResponseWriter: w, code: 200}
		defer func() { s.requests.WithLabelValues("GET /v1/watch", strconv.Itoa(rec.code)).Inc() }()
		s.watch(rec, r)
	})
	s.mux.Handle("GET /ui/", http.StripPrefix("/ui", ui.Handler()))
	s.mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	s.mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusFound))
	s.reg.MustRegister(&stateCollector{st: s.st})
}

// SetShuttingDown makes /v1/health/ready answer 503 from now on, so load
// balancers stop sending requests before the node goes away. The agent
// calls it first thing in Shutdown.
func (s *Handler) SetShuttingDown() {
	if s.health != nil {
		s.health.shuttingDown.Store(true)
		s.health.shutdownOnce.Do(func() { close(s.health.shutdown) })
	}
}

// local registers a route answered by this node alone (never forwarded),
// counted in switchyard_http_requests_total like the others.
func (s *Handler) local(pattern string, fn http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		defer func() { s.requests.WithLabelValues(pattern, strconv.Itoa(rec.code)).Inc() }()
		fn(rec, r)
	})
}

// LiveHandler answers GET /v1/health/live for node id. The agent serves it
// while raft is still starting, before the full API is ready.
func LiveHandler(id string) http.Handler {
	started := time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Live{Status: "live", Node: id, UptimeMs: time.Since(started).Milliseconds()})
	})
}

func (s *Handler) live(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, api.Live{Status: "live", Node: s.b.ID(), UptimeMs: time.Since(s.health.started).Milliseconds()})
}

func (s *Handler) ready(w http.ResponseWriter, r *http.Request) {
	maxLag := uint64(DefaultReadyMaxLag)
	if v := r.URL.Query().Get("max_lag"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.fail(w, fmt.Errorf("%w: max_lag must be a non-negative integer, got %q", fsm.ErrInvalid, v))
			return
		}
		maxLag = n
	}
	writeReadiness(w, s.readiness(maxLag))
}

func writeReadiness(w http.ResponseWriter, rd api.Readiness) {
	code := http.StatusOK
	if !rd.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rd)
}

// readiness evaluates the ready conditions from local state only.
func (s *Handler) readiness(maxLag uint64) api.Readiness {
	st := s.b.Status()
	rd := api.Readiness{Node: st.ID, State: st.State, Leader: st.Leader, CommitIndex: st.CommitIndex,
		AppliedIndex: st.AppliedIndex, MaxLag: maxLag, ShuttingDown: s.health.shuttingDown.Load(), Reasons: []string{}}
	for _, m := range st.Members {
		if m.ID == st.ID {
			rd.Member = true
		}
	}
	if st.CommitIndex > st.AppliedIndex {
		rd.Lag = st.CommitIndex - st.AppliedIndex
	}
	if rd.ShuttingDown || st.State == "Shutdown" {
		rd.ShuttingDown = true
		rd.Reasons = append(rd.Reasons, "shutting down")
	}
	if !rd.Member {
		rd.Reasons = append(rd.Reasons, "not a member of the raft configuration (yet)")
	}
	switch {
	case st.Leader == "":
		rd.Reasons = append(rd.Reasons, "no known leader")
	case st.State == "Candidate":
		// raft can keep the last leader's id while it campaigns.
		rd.Reasons = append(rd.Reasons, "no known leader: an election is under way (raft state Candidate)")
	case st.Leader == st.ID && !s.b.IsLeader():
		rd.Reasons = append(rd.Reasons, "elected leader, not ready to serve yet")
	}
	if rd.Lag > maxLag {
		rd.Reasons = append(rd.Reasons, fmt.Sprintf("applied index %d is %d entries behind commit index %d (max %d)", st.AppliedIndex, rd.Lag, st.CommitIndex, maxLag))
	}
	rd.Ready = len(rd.Reasons) == 0
	return rd
}

func (s *Handler) stats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, s.nodeStats())
}

// nodeStats reads this node's status and its counters from the registry
// that serves /metrics.
func (s *Handler) nodeStats() *api.NodeStats {
	ns := &api.NodeStats{Status: s.b.Status(), Allocations: map[string]float64{}, Datagrams: map[string]float64{},
		ShuttingDown: s.health.shuttingDown.Load(), UnixMs: time.Now().UnixMilli()}
	mfs, err := s.reg.Gather()
	if err != nil {
		s.log.Debug("gather metrics for stats", "err", err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "switchyard_allocations_total":
			sumByLabel(mf, "outcome", ns.Allocations)
		case "switchyard_quic_datagrams_total":
			sumByLabel(mf, "result", ns.Datagrams)
		case "switchyard_leaderships_total":
			ns.Leaderships = counterSum(mf)
		case "switchyard_failure_detector_marked_down_total":
			ns.MarkedDown = counterSum(mf)
		case "switchyard_commit_seconds":
			for _, m := range mf.GetMetric() {
				ns.CommitCount += m.GetHistogram().GetSampleCount()
				ns.CommitSumSeconds += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return ns
}

func sumByLabel(mf *dto.MetricFamily, label string, into map[string]float64) {
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				into[lp.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
}

func counterSum(mf *dto.MetricFamily) float64 {
	var v float64
	for _, m := range mf.GetMetric() {
		v += m.GetCounter().GetValue()
	}
	return v
}

// overview fetches every member's stats in parallel (this node's from
// memory), each bounded by overviewTimeout, so a dead member costs the
// page at most that long and is shown as unreachable.
func (s *Handler) overview(w http.ResponseWriter, r *http.Request) {
	lid, _, _ := s.b.Leader()
	if s.b.Status().State == "Candidate" {
		lid = "" // raft can keep the last leader's id while it campaigns
	}
	ov := api.Overview{Node: s.b.ID(), Leader: lid, Members: []api.MemberOverview{}, UnixMs: time.Now().UnixMilli()}
	members := s.b.Members()
	ov.Members = make([]api.MemberOverview, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		ov.Members[i] = api.MemberOverview{ID: m.ID, HTTPAddr: m.HTTPAddr, Suffrage: m.Suffrage, Leader: m.Leader}
		mo := &ov.Members[i]
		if m.ID == s.b.ID() {
			mo.Reachable, mo.Stats = true, s.nodeStats()
			mo.Stats.Status.Members = nil
			continue
		}
		if m.HTTPAddr == "" {
			mo.Error = "no HTTP address in the member table yet"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(r.Context(), overviewTimeout)
			defer cancel()
			st, err := s.fetchStats(ctx, r, m.HTTPAddr)
			if err != nil {
				mo.Error = err.Error()
				return
			}
			st.Status.Members = nil
			mo.Reachable, mo.Stats = true, st
		}()
	}
	wg.Wait()
	writeJSON(w, 200, ov)
}

func (s *Handler) fetchStats(ctx context.Context, in *http.Request, addr string) (*api.NodeStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.fwdScheme()+"://"+addr+"/v1/stats", nil) // https when the API is (acl.go)
	if err != nil {
		return nil, err
	}
	// The caller's credentials (token or the dashboard's cookie) read the
	// peers' stats too; over HTTPS this agent's certificate also speaks for it.
	for _, h := range []string{"Authorization", "Cookie"} {
		if v := in.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := s.fwd.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/stats on %s: HTTP %d", addr, resp.StatusCode)
	}
	var st api.NodeStats
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("GET /v1/stats on %s: %w", addr, err)
	}
	return &st, nil
}

// stateCollector exports gauges of this node's replica of the replicated
// state at scrape time: servers and units by state, active allocations,
// provisioning intents by kind and state, the policy version. Every label
// value is always present (0 when empty), so alerts and dashboards find
// the series before the first event.
type stateCollector struct{ st State }

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descServers, descCapacity, descUsed, descActiveAllocs, descIntents, descPolicyVersion} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.st
	count, capacity, used := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, st := range []fsmpb.ServerState{fsmpb.ServerState_SERVER_STATE_ACTIVE, fsmpb.ServerState_SERVER_STATE_DRAINING, fsmpb.ServerState_SERVER_STATE_DOWN} {
		count[fsm.StateName(st)] = 0
	}
	for _, sv := range f.Servers() {
		n := fsm.StateName(sv.GetState())
		count[n]++
		capacity[n] += float64(sv.GetCapacityUnits())
		used[n] += float64(sv.GetUsedUnits())
	}
	for n, v := range count {
		ch <- prometheus.MustNewConstMetric(descServers, prometheus.GaugeValue, v, n)
		ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, capacity[n], n)
		ch <- prometheus.MustNewConstMetric(descUsed, prometheus.GaugeValue, used[n], n)
	}
	ch <- prometheus.MustNewConstMetric(descActiveAllocs, prometheus.GaugeValue, float64(len(f.Allocations(fsm.AllocationFilter{ActiveOnly: true}))))
	intents := map[[2]string]float64{}
	for _, k := range []fsmpb.IntentKind{fsmpb.IntentKind_INTENT_KIND_PROVISION, fsmpb.IntentKind_INTENT_KIND_DEPROVISION} {
		for _, st := range []fsmpb.IntentState{fsmpb.IntentState_INTENT_STATE_PENDING, fsmpb.IntentState_INTENT_STATE_STARTED, fsmpb.IntentState_INTENT_STATE_DONE, fsmpb.IntentState_INTENT_STATE_FAILED} {
			intents[[2]string{fsm.IntentKindName(k), fsm.IntentStateName(st)}] = 0
		}
	}
	for _, it := range f.Intents() {
		intents[[2]string{fsm.IntentKindName(it.GetKind()), fsm.IntentStateName(it.GetState())}]++
	}
	for k, v := range intents {
		ch <- prometheus.MustNewConstMetric(descIntents, prometheus.GaugeValue, v, k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(descPolicyVersion, prometheus.GaugeValue, float64(f.Policy().GetVersion()))
}

// DefaultReadyMaxLag is how many committed entries a node may not yet have
// applied and still report ready. The leader packs many commands into one
// entry, so a healthy follower trails by a handful at most.
const DefaultReadyMaxLag = 1000

var (
	descServers = prometheus.NewDesc("switchyard_servers",
		"Registered media servers by state (this node's replica).", []string{"state"}, nil)
	descCapacity = prometheus.NewDesc("switchyard_server_capacity_units",
		"Capacity units of registered media servers by state (this node's replica).", []string{"state"}, nil)
	descUsed = prometheus.NewDesc("switchyard_server_used_units",
		"Allocated units on registered media servers by state (this node's replica).", []string{"state"}, nil)
	descActiveAllocs = prometheus.NewDesc("switchyard_allocations_active",
		"Active allocations (this node's replica).", nil, nil)
	descIntents = prometheus.NewDesc("switchyard_provisioning_intents",
		"Provisioning intents by kind and state (this node's replica; final ones are kept for the tombstone retention).", []string{"kind", "state"}, nil)
	descPolicyVersion = prometheus.NewDesc("switchyard_policy_version",
		"Version of the placement policy in force (this node's replica).", nil, nil)
)
