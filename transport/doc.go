// Package transport is the media-node protocol of Switchyard over QUIC
// (quic-go, TLS 1.3 with mutual authentication, ALPN "switchyard/1",
// datagrams enabled), and the agent-to-agent relaying behind it.
//
// # Media-node API (stable)
//
// A media node creates one Client with the QUIC addresses of some or all
// allocator agents and a client certificate of the cluster CA
// (pki.LoadIdentity(...).ClientConfig(transport.ALPN)):
//
//	c, err := transport.NewClient(transport.ClientConfig{Addrs: addrs, TLS: tlsConf})
//	srv, err := c.Register(ctx, transport.ServerInfo{ID: "m1", Capacity: 100, Incarnation: uint64(time.Now().UnixNano())})
//	err = c.Report(transport.Load{CPU: 0.4, EgressBps: 80e6, AllocationIDs: hosted, FreeUnits: 60}) // every 500 ms
//	a, dup, err := c.Allocate(ctx, transport.AllocateRequest{RequestID: "r-123", Room: "lobby", Units: 2})
//	a, err = c.Release(ctx, a.GetId())
//	srv, err = c.Drain(ctx)
//	c.Addr()      // allocator currently connected to ("" while reconnecting)
//	c.Failovers() // connections lost and replaced
//	c.Close()
//
// Guarantees: Register, Allocate, Release and Drain have the HTTP API's
// semantics and idempotency (same request id ⇒ same allocation). Refusals
// come back as *Error, which unwraps to the errcode sentinels (errcode.ErrCapacity,
// errcode.ErrNotFound, ...) or the retryable ones; the client itself
// retries retryable failures (no leader, leadership lost, unknown outcome,
// dead connection) with backoff until the caller's ctx ends. When the
// connected allocator dies the client moves to the next address and
// re-registers the server there with the same incarnation (and drains it
// again if Drain was called): the registration survives failover. It
// re-sends the latest load at once, without waiting for the
// re-registration to commit: an allocator that already holds the
// registration accepts the server's reports as soon as it reads the
// register request, and the client repeats the load a few times in the
// first ~0.6 s so that one arrives after that, then once more after the
// commit. Report never blocks: reports are
// unreliable datagrams, each a whole snapshot, and a lost one is replaced
// by the next.
//
// # Wire format
//
// Datagrams: byte 0 is the wire version (1), byte 1 the message type
// (1 = LoadReport), then the protobuf LoadReport (proto/switchyard/v1/
// transport.proto), at most ReportBudget bytes: lists that do not fit are
// cut and the report says truncated. Receivers drop and count (metric
// switchyard_quic_datagrams_total{result}) truncated, oversized,
// wrong-version, unknown-type and malformed datagrams, reports for a server
// that is not registered (unknown_server) or was registered by another
// connection (not_bound), older or duplicate sequence numbers (stale), and
// datagrams past a per-connection token bucket (rate_limited). Each
// connection's datagrams are drained by their own goroutine (quic-go queues
// only 128 per connection), which applies the connection's rate limit and
// hands them to a shared queue served by one worker per core (overflow,
// when that queue is full, is counted too).
//
// Streams: one request per bidirectional stream, each side sending one
// frame: a 4-byte big-endian length and a protobuf Request or Response. A
// peer must send its whole request within ServerConfig.RequestTimeout or
// the stream is reset and counted (ServerConfig is package quicapi's: the
// agents' listener; this package is the client side and the wire format
// only, and links nothing of the server). A follower relays requests to the
// leader over its own QUIC connection, marking them forwarded so they are
// never relayed twice; each attempt is bounded by the raft timing and
// fails over to a new leader (cluster.Node.Forward).
//
// Report sharing: every agent, the leader included, keeps the latest
// report per server its own media nodes sent and at most every
// ForwardInterval sends them to every other agent as ReportBatch frames,
// on one long-lived unidirectional stream per agent written by its own
// goroutine (a dead or paused agent delays nobody else). Each report
// carries its age, so the receiver dates it by when it reached the agent
// that shared it. Shared reports are never shared again. So every agent
// holds the whole fleet's latest reports, and a new leader places on fresh
// load from its first decision. Only peers whose certificate is an agent's
// and names a cluster member may open such streams.
//
// # Security
//
// Connections without a client certificate, or with one not signed by the
// cluster CA, are refused during the handshake and counted in
// switchyard_quic_handshakes_refused_total{reason}. The agents accept a
// register or drain request only from a media certificate naming that
// server id, and a server's reports only on the connection that registered
// it (or re-registered the incarnation the registry holds).
package transport
