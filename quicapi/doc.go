// Package quicapi is an agent's QUIC listener for the media-node protocol
// (package transport holds the wire format and the client): it accepts
// mutually authenticated connections from media nodes and other agents,
// ingests load datagrams into the load view, serves requests on streams
// with the HTTP API's semantics and error codes (package errcode), relays
// them to the leader from a follower, and shares the latest report per
// server of its own media nodes with every other agent.
//
// Imports: cluster (forwarding and failover), fsm (read-only state), acl,
// loadview, pki, transport; imported only by agent.
package quicapi
