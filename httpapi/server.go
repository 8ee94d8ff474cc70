package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard/switchyard/acl"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/service"
)

// Backend is the node the API serves. *cluster.Node implements it. The
// requests the QUIC listener serves too go through the service layer
// (service.Node); the rest are the node's own typed writes.
type Backend interface {
	service.Node
	ID() string
	IsLeader() bool
	Leader() (string, *fsmpb.Member, bool)
	Info() cluster.PeerInfo
	Status() cluster.Status
	Members() []cluster.MemberStatus
	FeatureOn(feature string) bool
	VerifyLeader(ctx context.Context) error
	AddVoter(ctx context.Context, m *fsmpb.Member) error
	RemovePeer(ctx context.Context, id string) error
	TransferLeadership(ctx context.Context, id string) error
	SetPolicy(ctx context.Context, p *fsmpb.Policy) (*fsmpb.Policy, error)
	PlaceRoom(ctx context.Context, p *fsmpb.PlaceRoom) (*fsmpb.Room, error)
	ReleaseRoom(ctx context.Context, name string) (*fsmpb.Room, error)
	VacateRoom(ctx context.Context, name, server, allocationID, reason string) (*fsmpb.Room, error)
	AddMediaKey(ctx context.Context, k *fsmpb.MediaKey) error
	CreateACLToken(ctx context.Context, t *fsmpb.AclToken, bootstrap bool) error
	RevokeACLToken(ctx context.Context, id string) (index uint64, err error)
	Snapshot(ctx context.Context) (*fsmpb.State, error)
	Restore(ctx context.Context, st *fsmpb.State, adopt bool) error
}

// State is the read side of the node's replica the API answers from.
// *fsm.FSM implements it. Every method returns copies the caller may keep.
type State interface {
	acl.TokenSource
	MemberLists(id, feature string) bool
	Server(id string) (*fsmpb.Server, bool)
	Servers() []*fsmpb.Server
	Allocation(id string) (*fsmpb.Allocation, bool)
	AllocationByRequest(requestID string) (*fsmpb.Allocation, bool)
	Allocations(flt fsm.AllocationFilter) []*fsmpb.Allocation
	Room(name string) (*fsmpb.Room, bool)
	Rooms(server string) []*fsmpb.Room
	ServerSFUs() map[string]string
	Policy() *fsmpb.Policy
	Intents() []*fsmpb.ProvisionIntent
	MediaKeys() []*fsmpb.MediaKey
	ACLBootstrapped() bool
	ACLTokens() []*fsmpb.AclToken
	// Export, ExportAt, DeltaSince, ChangedSince and AppliedIndex feed the
	// watch stream.
	Export() *fsmpb.State
	ExportAt() (*fsmpb.State, fsm.ChangeCursor)
	DeltaSince(cur fsm.ChangeCursor) (fsm.Delta, fsm.ChangeCursor, bool)
	ChangedSince(index uint64) (fsm.Changed, uint64, bool)
	AppliedIndex() uint64
}

// ServerListDecorator, when set, may add soft-state fields (e.g. the
// reported load) to server list entries. It returns the JSON value to
// emit for s.
type ServerListDecorator func(s api.Server) any

// Handler serves the admin API for one node.
type Handler struct {
	b        Backend
	st       State
	svc      *service.Service
	log      *slog.Logger
	mux      *routeMux
	fwd      *http.Client
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	// Decorate, if set before serving, decorates GET /v1/servers entries.
	Decorate ServerListDecorator
	coalesce *coalescer // coalesce.go: nil without a failover-capable backend
	health   *health    // health.go
	acl      aclState   // acl.go
}

// forwardedHeader marks a request a follower forwarded, so it is never
// forwarded twice (no loops while leadership moves).
const forwardedHeader = "X-Switchyard-Forwarded"

// maxBody bounds request bodies (snapshots included).
const maxBody = 64 << 20

// NewHandler builds the handler for b. reg receives the API's metrics and is
// served on /metrics; nil makes a private registry.
func NewHandler(b Backend, st State, log *slog.Logger, reg *prometheus.Registry) *Handler {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Handler{b: b, st: st, svc: service.New(b), log: log, mux: &routeMux{ServeMux: http.NewServeMux()}, reg: reg,
		fwd: &http.Client{Timeout: 30 * time.Second, Transport: api.NewTransport()}}
	if fw, ok := b.(leaderForwarder); ok {
		s.coalesce = newCoalescer(s, fw, reg)
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchyard_http_requests_total", Help: "Admin API requests by route and status code.",
	}, []string{"route", "code"})
	reg.MustRegister(s.requests)

	s.handle("GET /v1/status", s.status, false)
	s.handle("GET /v1/members", s.members, false)
	s.handle("GET /v1/internal/info", s.info, false)
	s.handle("POST /v1/members", s.join, true)
	s.handle("DELETE /v1/members/{id}", s.removeMember, true)
	s.handle("POST /v1/operator/transfer-leader", s.transfer, true)
	s.handle("GET /v1/servers", s.listServers, false)
	s.handle("GET /v1/servers/{id}", s.getServer, false)
	s.handle("POST /v1/servers", s.registerServer, true)
	s.handle("DELETE /v1/servers/{id}", s.deregisterServer, true)
	s.handle("POST /v1/servers/{id}/drain", s.drainServer, true)
	s.handle("GET /v1/allocations", s.listAllocations, false)
	s.handle("GET /v1/allocations/{id}", s.getAllocation, false)
	s.handle("POST /v1/allocations", s.allocate, true)
	s.handle("DELETE /v1/allocations/{id}", s.release, true)
	s.handle("POST /v1/allocations/batch", s.allocateBatch, true) // batch.go
	s.handle("GET /v1/snapshot", s.snapshot, true)
	s.handle("POST /v1/snapshot", s.restore, true)
	s.registerPolicyRoutes() // policy.go
	s.registerOpsRoutes()    // health, stats, overview, dashboard: health.go
	s.registerRoomRoutes()   // rooms.go
	s.registerACLRoutes()    // acl.go
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// Go's profiler, answered by the agent asked (operators only once ACLs
	// are on): go tool pprof http://AGENT/debug/pprof/profile?seconds=10
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, &api.Error{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path), Code: "not_found"})
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r, ok := s.guard(w, r) // acl.go: browser protection, authentication, authorization
	if !ok {
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Handle adds a route (used by other packages to extend the API).
func (s *Handler) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

type statusRecorder struct {
	http.ResponseWriter
	code   int
	pretty bool // ?pretty: indent JSON for a human (the hot path stays compact)
}

func (r *statusRecorder) WriteHeader(c int) { r.code = c; r.ResponseWriter.WriteHeader(c) }

// handle registers fn. leaderOnly routes, and reads without ?stale=true,
// run on the leader: a follower forwards them.
func (s *Handler) handle(pattern string, fn http.HandlerFunc, leaderOnly bool) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200, pretty: r.URL.Query().Has("pretty")}
		defer func() { s.requests.WithLabelValues(pattern, strconv.Itoa(rec.code)).Inc() }()
		needLeader := leaderOnly || (r.Method == http.MethodGet && r.URL.Query().Get("stale") != "true" && pattern != "GET /v1/status" && pattern != "GET /v1/internal/info" && pattern != "GET /v1/members")
		if needLeader && !s.b.IsLeader() {
			s.forward(rec, r)
			return
		}
		if needLeader && r.Method == http.MethodGet && pattern != "GET /v1/snapshot" {
			if err := s.b.VerifyLeader(r.Context()); err != nil {
				s.fail(rec, err)
				return
			}
		}
		fn(rec, r)
	})
}

// forward relays r to the leader and copies its answer back. With a
// backend that can fail over (cluster.Node.Forward), each attempt is
// bounded by the raft timing and the request is re-sent, unchanged (same
// request id), to a new leader when leadership moves or the leader goes
// silent; the number of attempts is reported in forwardAttemptsHeader.
func (s *Handler) forward(w http.ResponseWriter, r *http.Request) {
	lid, lm, ok := s.b.Leader()
	fw, canFailover := s.b.(leaderForwarder)
	if r.Header.Get(forwardedHeader) != "" || (!canFailover && (!ok || lm == nil || lm.HttpAddr == "")) {
		err := cluster.ErrNoLeader
		if ok {
			err = cluster.ErrNotLeader
		}
		s.fail(w, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, &api.Error{Error: "request body: " + err.Error(), Code: "invalid_argument"})
		return
	}
	if !canFailover {
		ans, err := s.forwardTo(r.Context(), r, body, lid, lm)
		if err != nil {
			// The leader may have received it: report unknown, retryable.
			writeError(w, http.StatusServiceUnavailable, &api.Error{Error: fmt.Sprintf("forward to leader %s: %v", lid, err), Code: "unknown_outcome", Retryable: true, Leader: lid})
			return
		}
		ans.write(w, cluster.ForwardStats{Attempts: 1, Leaders: []string{lid}})
		return
	}
	// Writes that must reach the leader at most once (moving leadership,
	// minting tokens or keys) are forwarded without fail-over re-sends;
	// api.Resendable is the one list, shared with the SDK's retries.
	idempotent := api.Resendable(r.Method, r.URL.Path)
	if idempotent && s.coalesce != nil && r.Method == http.MethodPost && r.URL.Path == "/v1/allocations" && r.URL.RawQuery == "" {
		var one api.AllocateRequest
		// Many concurrent allocations share one batch to the leader
		// (coalesce.go); a body the leader would refuse is sent as is, so
		// the refusal reads the same.
		if strictJSON(body, &one) == nil && s.coalesce.allocate(w, r, one) {
			return
		}
	}
	ans, st, err := s.forwardFailover(r.Context(), fw, idempotent, r.Method, r.URL.RequestURI(), r.Header, body)
	w.Header().Set(forwardAttemptsHeader, strconv.Itoa(st.Attempts))
	w.Header().Set(forwardLeadersHeader, strings.Join(st.Leaders, ","))
	if st.Attempts > 1 {
		s.log.Info("forwarded request failed over to another leader", "method", r.Method, "path", r.URL.Path, "attempts", st.Attempts, "leaders", st.Leaders, "err", err)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	if st.Unanswered {
		ans = settle(ans, r.URL.Path == "/v1/allocations/batch") // settle.go
	}
	ans.write(w, st)
}

// forwardFailover sends one request to the leader through fw, which bounds
// each attempt and re-sends it to a new leader when leadership moves (if
// idempotent). A leader that answers not_leader or no_leader counts as
// "not sent".
func (s *Handler) forwardFailover(ctx context.Context, fw leaderForwarder, idempotent bool, method, uri string, header http.Header, body []byte) (*forwardAnswer, cluster.ForwardStats, error) {
	var ans *forwardAnswer
	st, err := fw.Forward(ctx, idempotent, func(ctx context.Context, lid string, m *fsmpb.Member) error {
		a, err := s.forwardRaw(ctx, method, uri, header, body, lid, m)
		if err != nil {
			return err
		}
		if err := refusedAsNotLeader(a, lid); err != nil {
			return err
		}
		ans = a
		return nil
	})
	return ans, st, err
}

// refusedAsNotLeader returns an error wrapping ErrNotLeader when leader
// lid's answer says it is not (or no longer) the leader: the request was
// not proposed, so Forward may send it to another node.
func refusedAsNotLeader(a *forwardAnswer, lid string) error {
	if a.status != http.StatusServiceUnavailable {
		return nil
	}
	var e api.Error
	if json.Unmarshal(a.body, &e) == nil && (e.Code == "not_leader" || e.Code == "no_leader") {
		return fmt.Errorf("%w: %s answered: %s", cluster.ErrNotLeader, lid, e.Error)
	}
	return nil
}

// forwardAttemptsHeader tells how many times a follower sent the request to
// a leader (more than one: it failed over); forwardLeadersHeader lists
// the leader of each attempt, comma-separated.
const (
	forwardAttemptsHeader = "X-Switchyard-Forward-Attempts"
	forwardLeadersHeader  = "X-Switchyard-Forward-Leaders"
)

// leaderForwarder is implemented by backends that bound forwarded
// attempts and fail them over to a new leader (*cluster.Node).
type leaderForwarder interface {
	Forward(ctx context.Context, idempotent bool, send cluster.ForwardFunc) (cluster.ForwardStats, error)
}

// forwardAnswer is a leader's buffered answer to a forwarded request.
type forwardAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (a *forwardAnswer) write(w http.ResponseWriter, st cluster.ForwardStats) {
	for k, v := range a.header {
		w.Header()[k] = v
	}
	w.Header().Set(forwardAttemptsHeader, strconv.Itoa(st.Attempts))
	w.Header().Set(forwardLeadersHeader, strings.Join(st.Leaders, ","))
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

// forwardTo sends r (with body) to leader lid once and reads its answer.
func (s *Handler) forwardTo(ctx context.Context, r *http.Request, body []byte, lid string, m *fsmpb.Member) (*forwardAnswer, error) {
	return s.forwardRaw(ctx, r.Method, r.URL.RequestURI(), r.Header, body, lid, m)
}

// forwardRaw sends one request (method, request URI, the caller's headers,
// body) to leader lid, marked as forwarded by this node, and reads its
// answer. An error wrapping ErrNotLeader means it was certainly not sent.
func (s *Handler) forwardRaw(ctx context.Context, method, uri string, header http.Header, body []byte, lid string, m *fsmpb.Member) (*forwardAnswer, error) {
	if m == nil || m.GetHttpAddr() == "" {
		return nil, fmt.Errorf("%w: leader %s has no known HTTP address", cluster.ErrNotLeader, lid)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.fwdScheme()+"://"+m.GetHttpAddr()+uri, bytes.NewReader(body)) // acl.go: https when the API is
	if err != nil {
		return nil, err
	}
	req.Header = header.Clone()
	req.Header.Set(forwardedHeader, s.b.ID())
	resp, err := s.fwd.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			// Never sent: safe to send anywhere.
			return nil, fmt.Errorf("%w: leader %s: %v", cluster.ErrNotLeader, lid, err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read leader %s's answer: %w", lid, err)
	}
	return &forwardAnswer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	if rec, ok := w.(*statusRecorder); ok && rec.pretty {
		enc.SetIndent("", "  ")
	}
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, e *api.Error) { writeJSON(w, code, e) }

// writeJSONList answers 200 with items as one JSON array, encoding and
// writing one element at a time: a list of 100,000 servers is streamed,
// never held as one encoded body. ?pretty indents it whole instead.
func writeJSONList[T any](w http.ResponseWriter, items []T, conv func(T) any) {
	if rec, ok := w.(*statusRecorder); ok && rec.pretty {
		out := make([]any, len(items))
		for i, it := range items {
			out[i] = conv(it)
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	_ = bw.WriteByte('[')
	for i, it := range items {
		b, err := json.Marshal(conv(it))
		if err != nil {
			break // the values are plain structs; cannot happen
		}
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		_, _ = bw.Write(b)
	}
	_, _ = bw.WriteString("]\n")
	_ = bw.Flush()
}

// fail answers err with the right status, code and retry hint.
func (s *Handler) fail(w http.ResponseWriter, err error) {
	status, e := s.errorFor(err)
	writeError(w, status, e)
}

// errorFor maps err to its HTTP status and wire error: errcode's table,
// shared with the QUIC listener and the clients. An error that wraps no
// sentinel is a bug or an unexpected failure: logged, answered 500.
func (s *Handler) errorFor(err error) (int, *api.Error) {
	lid, _, _ := s.b.Leader()
	e := &api.Error{Error: err.Error(), Leader: lid}
	ent, ok := errcode.Lookup(err)
	if !ok {
		e.Code = errcode.Internal
		s.log.Error("request failed", "err", err)
		return http.StatusInternalServerError, e
	}
	e.Code, e.Retryable, e.Committed = ent.Code, ent.Retryable, errcode.IsCommitted(err)
	return ent.HTTPStatus, e
}

// decode reads a JSON body into v, refusing unknown fields and trailing data.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeFrom(http.MaxBytesReader(w, r.Body, 1<<20), v)
}

// strictJSON decodes body into v with decode's rules.
func strictJSON(body []byte, v any) error { return decodeFrom(bytes.NewReader(body), v) }

func decodeFrom(rd io.Reader, v any) error {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: malformed JSON body: %v", fsm.ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: malformed JSON body: trailing data after the object", fsm.ErrInvalid)
	}
	return nil
}

func (s *Handler) status(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.b.Status()) }

func (s *Handler) members(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, s.b.Members())
}

func (s *Handler) info(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.b.Info()) }

func (s *Handler) join(w http.ResponseWriter, r *http.Request) {
	var m api.Member
	if err := decode(w, r, &m); err != nil {
		s.fail(w, err)
		return
	}
	pm := &fsmpb.Member{Id: m.ID, RaftAddr: m.RaftAddr, HttpAddr: m.HTTPAddr, QuicAddr: m.QUICAddr, Features: m.Features}
	if err := s.b.AddVoter(r.Context(), pm); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, m)
}

func (s *Handler) removeMember(w http.ResponseWriter, r *http.Request) {
	if err := s.b.RemovePeer(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, map[string]string{"removed": r.PathValue("id")})
}

func (s *Handler) transfer(w http.ResponseWriter, r *http.Request) {
	var t api.TransferRequest
	if r.ContentLength != 0 {
		if err := decode(w, r, &t); err != nil {
			s.fail(w, err)
			return
		}
	}
	old := s.b.ID()
	if err := s.b.TransferLeadership(r.Context(), t.ID); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, map[string]string{"previous_leader": old, "requested": t.ID})
}

// listServers answers the servers ordered by id, those in the states
// ?state= names when it is given (see serverStateFilter) and whose id
// starts with ?prefix= (at most fsm.MaxIDLen bytes), paged like every
// list (paging.go): X-Total-Count counts the servers that match.
func (s *Handler) listServers(w http.ResponseWriter, r *http.Request) {
	keep, err := serverStateFilter(r.URL.Query()["state"])
	if err != nil {
		s.fail(w, err)
		return
	}
	prefix := r.URL.Query().Get("prefix")
	if len(prefix) > fsm.MaxIDLen {
		s.fail(w, fmt.Errorf("%w: prefix is %d bytes, server ids are at most %d", fsm.ErrInvalid, len(prefix), fsm.MaxIDLen))
		return
	}
	all := s.st.Servers()
	if keep != nil || prefix != "" {
		all = slices.DeleteFunc(all, func(v *fsmpb.Server) bool {
			return keep != nil && !keep[v.GetState()] || !strings.HasPrefix(v.GetId(), prefix)
		})
	}
	servers, err := page(w, r, all, (*fsmpb.Server).GetId)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSONList(w, servers, func(v *fsmpb.Server) any {
		if s.Decorate != nil {
			return s.Decorate(ServerFromPB(v))
		}
		return ServerFromPB(v)
	})
}

func (s *Handler) getServer(w http.ResponseWriter, r *http.Request) {
	v, ok := s.st.Server(r.PathValue("id"))
	if !ok {
		s.fail(w, fmt.Errorf("%w: server %q is not registered", fsm.ErrNotFound, r.PathValue("id")))
		return
	}
	js := ServerFromPB(v)
	if s.Decorate != nil {
		writeJSON(w, 200, s.Decorate(js))
		return
	}
	writeJSON(w, 200, js)
}

func (s *Handler) registerServer(w http.ResponseWriter, r *http.Request) {
	var req api.RegisterServerRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	v, err := s.svc.RegisterServer(r.Context(), &fsmpb.Server{
		Id: req.ID, Addresses: req.Addresses, Region: req.Region, Zone: req.Zone, Labels: req.Labels,
		CapacityUnits: req.Capacity, Incarnation: req.Incarnation,
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, ServerFromPB(v))
}

func (s *Handler) deregisterServer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.svc.DeregisterServer(r.Context(), id); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, map[string]string{"deregistered": id})
}

func (s *Handler) drainServer(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.DrainServer(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, ServerFromPB(v))
}

func (s *Handler) listAllocations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	flt := fsm.AllocationFilter{Room: q.Get("room"), Server: q.Get("server"), ActiveOnly: q.Get("active") == "true"}
	allocs, err := page(w, r, s.st.Allocations(flt), (*fsmpb.Allocation).GetId)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSONList(w, allocs, func(a *fsmpb.Allocation) any { return AllocationFromPB(a) })
}

func (s *Handler) getAllocation(w http.ResponseWriter, r *http.Request) {
	a, ok := s.st.Allocation(r.PathValue("id"))
	if !ok {
		s.fail(w, fmt.Errorf("%w: allocation %q does not exist", fsm.ErrNotFound, r.PathValue("id")))
		return
	}
	writeJSON(w, 200, AllocationFromPB(a))
}

func (s *Handler) allocate(w http.ResponseWriter, r *http.Request) {
	var req api.AllocateRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	a, code, err := s.allocateOne(r.Context(), req)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, code, a)
}

// allocateOne runs one allocation request through the service layer: the
// rules the single and the batched endpoints (and the QUIC listener)
// share. code is 201 for a new allocation, 200 for a request id already
// answered.
func (s *Handler) allocateOne(ctx context.Context, req api.AllocateRequest) (api.Allocation, int, error) {
	a, dup, err := s.svc.Allocate(ctx, service.AllocateInput{
		RequestID: req.RequestID, Room: req.Room, Units: req.Units, Requester: req.Requester,
		Region: req.Region, Server: req.Server, TTLMs: req.TTLMs,
	})
	if err != nil {
		return api.Allocation{}, 0, err
	}
	js := AllocationFromPB(a)
	js.Duplicate = dup
	if dup {
		return js, http.StatusOK, nil
	}
	return js, http.StatusCreated, nil
}

func (s *Handler) release(w http.ResponseWriter, r *http.Request) {
	a, err := s.svc.Release(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, AllocationFromPB(a))
}

func (s *Handler) snapshot(w http.ResponseWriter, r *http.Request) {
	st, err := s.b.Snapshot(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	var buf bytes.Buffer
	if err := fsm.WriteState(&buf, st); err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Header().Set("X-Switchyard-State-Hash", fsm.HashState(st))
	_, _ = w.Write(buf.Bytes())
}

func (s *Handler) restore(w http.ResponseWriter, r *http.Request) {
	st, err := fsm.ReadState(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		s.fail(w, err)
		return
	}
	s.keepACL(st) // acl.go: a restore never changes credentials
	if err := s.b.Restore(r.Context(), st, r.URL.Query().Get("adopt") == "true"); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"restored": true, "state_hash": fsm.HashState(st), "servers": len(st.Servers), "allocations": len(st.Allocations)})
}

// routeMux is the handler's ServeMux, remembering the patterns registered
// on it (Routes).
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.HandleFunc(pattern, h)
}

// Routes lists the patterns of every route the handler serves, sorted
// (for tests that must cover each, such as the authorization table).
func (s *Handler) Routes() []string {
	out := slices.Clone(s.mux.patterns)
	slices.Sort(out)
	return out
}
