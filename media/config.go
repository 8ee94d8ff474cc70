package media

import (
	"context"
	"github.com/switchyard/switchyard/mediatoken"

	"fmt"
	"log/slog"
	"net"
	"time"
)

// CostModel says how many capacity units each kind of session costs.
// Defaults: a viewer costs 1 unit, a publisher (WHIP client or an incoming
// cascade) 0, an outgoing cascade 0 (so a full node can still spill a room;
// the target's units are reserved by the cluster allocation instead).
type CostModel struct {
	Viewer, Publisher, CascadeOut int64
}

// Config configures a Node. Zero durations take the defaults noted.
type Config struct {
	ID       string
	Region   string
	Capacity int64 // units (> 0)
	Costs    *CostModel
	// PublicURL is the base URL other nodes and viewers reach this node at
	// (e.g. "http://10.0.0.5:8080"); registered as the node's address.
	// Defaults to http://<listen address>.
	PublicURL string
	// ICEIPs limits host candidates to these IPs; empty means every
	// interface address (loopback included).
	ICEIPs []net.IP
	// CascadeUnits is the units an origin asks the cluster for when it
	// cascades a room; that many redirected viewers share one cascade. Default 4.
	CascadeUnits int64
	// CascadeIdle closes a cascade that has had no viewers this long. Default 30s.
	CascadeIdle time.Duration
	// CascadePoll is how often an origin polls its cascade targets. Default 1s.
	CascadePoll time.Duration
	// ConnectTimeout closes a session whose ICE/DTLS has not connected this
	// long after the answer. Default 15s.
	ConnectTimeout time.Duration
	// TrackWait is how long a viewer's request waits for the room's
	// publisher to produce its tracks. Default 5s.
	TrackWait time.Duration
	// ICEDisconnected/ICEFailed are pion's ICE consent timeouts: a peer that
	// stops answering is closed after ICEFailed. Defaults 3s and 6s.
	ICEDisconnected, ICEFailed time.Duration
	// ReportInterval is the load report period. Default 500ms: four
	// reports in the agents' default 2 s failure window, so one or two
	// lost datagrams do not mark the node down.
	ReportInterval time.Duration
	// StatePoll is how often the node asks the cluster for its own state
	// (to see an operator's drain). Default 2s; negative disables.
	StatePoll time.Duration
	Logger    *slog.Logger
	// Tokens, when set, makes WHIP and WHEP require a token of the
	// cluster's media keys scoped to the room and action (tokens.go); the
	// node signs its own cascade and redirect tokens with it.
	Tokens *mediatoken.Keyring
	// RefreshTokens, when set, reloads Tokens from the cluster. It is
	// called when a token names a key Tokens lacks (a key rotated in since
	// the last load), and the token is checked again after it returns; it
	// must bound its own wait and rate (anyone can present a token naming
	// a key that does not exist).
	RefreshTokens func(context.Context) error
}

func (c *Config) setDefaults() error {
	if c.ID == "" {
		return fmt.Errorf("media config: ID is required")
	}
	if c.Capacity <= 0 {
		return fmt.Errorf("media config: Capacity must be > 0, got %d", c.Capacity)
	}
	if c.Costs == nil {
		c.Costs = &CostModel{Viewer: 1}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.CascadeUnits <= 0 {
		c.CascadeUnits = 4
	}
	def(&c.CascadeIdle, 30*time.Second)
	def(&c.CascadePoll, time.Second)
	def(&c.ConnectTimeout, 15*time.Second)
	def(&c.TrackWait, 5*time.Second)
	def(&c.ICEDisconnected, 3*time.Second)
	def(&c.ICEFailed, 6*time.Second)
	def(&c.ReportInterval, 500*time.Millisecond)
	def(&c.StatePoll, 2*time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
