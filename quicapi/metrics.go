package quicapi

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the QUIC listener's counters. They are registered on the
// registry given to NewServer (the agent's /metrics).
type Metrics struct {
	// HandshakesRefused counts refused TLS handshakes by reason:
	// no_client_cert, untrusted_cert.
	HandshakesRefused *prometheus.CounterVec
	// Connections counts accepted connections.
	Connections prometheus.Counter
	// OpenConnections is the number of live accepted connections.
	OpenConnections prometheus.Gauge
	// Datagrams counts received datagrams by result: accepted, stale,
	// rate_limited, not_bound (registered by another connection),
	// unknown_server, overflow (shared ingest queue full), truncated, oversized, wrong_version,
	// unknown_type, malformed.
	Datagrams *prometheus.CounterVec
	// Requests counts stream requests by op and result code ("ok" on
	// success).
	Requests *prometheus.CounterVec
	// StreamErrors counts streams dropped before a request was read, by
	// reason: timeout, truncated, oversized, malformed, refused.
	StreamErrors *prometheus.CounterVec
	// Forwarded counts load reports relayed between agents, by direction
	// (sent, received, dropped).
	Forwarded *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		HandshakesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_quic_handshakes_refused_total", Help: "QUIC/TLS handshakes refused, by reason.",
		}, []string{"reason"}),
		Connections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_quic_connections_total", Help: "QUIC connections accepted.",
		}),
		OpenConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_quic_open_connections", Help: "QUIC connections currently open.",
		}),
		Datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_quic_datagrams_total", Help: "QUIC datagrams received, by result.",
		}, []string{"result"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_quic_requests_total", Help: "QUIC stream requests, by operation and result code.",
		}, []string{"op", "code"}),
		StreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_quic_stream_errors_total", Help: "QUIC streams dropped before a whole request was read, by reason.",
		}, []string{"reason"}),
		Forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_quic_forwarded_reports_total", Help: "Load reports relayed between agents, by direction.",
		}, []string{"dir"}),
	}
	// Exported at zero from the start, so that rates and alerts over them
	// have a series before the first report is shared or dropped.
	for _, dir := range []string{"sent", "received", "dropped"} {
		m.Forwarded.WithLabelValues(dir)
	}
	if reg != nil {
		reg.MustRegister(m.HandshakesRefused, m.Connections, m.OpenConnections, m.Datagrams, m.Requests, m.StreamErrors, m.Forwarded)
	}
	return m
}
