package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/transport"
)

// TestResolveAllocators classifies --allocators entries against a running
// cluster: HTTP API addresses, QUIC addresses, a mix, scheme prefixes, a
// QUIC address without TLS, and an address that answers neither.
func TestResolveAllocators(t *testing.T) {
	c := testcluster.New(t, 3)
	h, q := c.Addrs(), c.QUICAddrs()
	tlsConf := c.Identity("probe").ClientConfig(transport.ALPN)
	closed := testcluster.FreeAddr(t) // nothing listens there, TCP or UDP
	// A media node reads the member table over the plain HTTP API with its
	// media token (SWITCHYARD_TOKEN, which api.NewClient reads).
	tok, err := c.Client().ACLCreateToken(testcluster.Context(t, 30*time.Second), api.CreateTokenRequest{Role: "media", Server: "probe", Description: "media node probe"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(api.TokenEnv, tok.Secret)
	for _, tc := range []struct {
		name              string
		entries           []string
		tls               bool
		wantHTTP          []string
		wantQUIC          []string
		wantOthers        int
		wantErr, wantErr2 string
	}{
		{name: "http, no tls", entries: h, wantHTTP: h},
		{name: "http", entries: h, tls: true, wantHTTP: h, wantQUIC: q},
		{name: "one http", entries: h[1:2], tls: true, wantHTTP: h[1:2], wantQUIC: q[1:2], wantOthers: 2},
		{name: "quic", entries: q, tls: true, wantQUIC: q},
		{name: "mix", entries: []string{h[0], q[1], q[2]}, tls: true, wantHTTP: h, wantQUIC: q},
		{name: "mix, quic first", entries: []string{q[0], h[1]}, tls: true, wantHTTP: []string{h[0], h[1]}, wantQUIC: []string{q[0], q[1]}, wantOthers: 1},
		{name: "prefixes", entries: []string{"quic://" + q[0], "http://" + h[1] + "/", "https://" + h[2]}, tls: true, wantHTTP: h, wantQUIC: q},
		{name: "quic without tls", entries: []string{h[0], q[1]}, wantErr: q[1] + " is agent n2's QUIC address", wantErr2: h[1]},
		{name: "quic prefix without tls", entries: []string{"quic://" + q[0]}, wantErr: "is a QUIC address"},
		{name: "only quic without tls", entries: q[:1], wantErr: q[0] + " does not answer the HTTP API"},
		{name: "neither", entries: []string{closed}, tls: true, wantErr: closed + " answers neither the HTTP API"},
		{name: "neither beside good ones", entries: []string{h[0], closed}, tls: true, wantErr: closed + " answers neither"},
		{name: "not host:port", entries: []string{"nohostport"}, wantErr: "not host:port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := resolveOpts{Wait: time.Second, Probe: 2 * time.Second}
			if tc.tls {
				opts.QUIC = tlsConf
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			got, err := resolveAllocators(ctx, tc.entries, opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.wantErr2) {
					t.Fatalf("err %v, want one saying %q and %q (got %+v)", err, tc.wantErr, tc.wantErr2, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.HTTP, tc.wantHTTP) || !slices.Equal(got.QUIC, tc.wantQUIC) || len(got.OtherQUIC) != tc.wantOthers {
				t.Fatalf("got HTTP %v QUIC %v others %v, want HTTP %v QUIC %v and %d others", got.HTTP, got.QUIC, got.OtherQUIC, tc.wantHTTP, tc.wantQUIC, tc.wantOthers)
			}
		})
	}
}
