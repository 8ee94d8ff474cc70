package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/media"
	"github.com/switchyard/switchyard/mediatoken"
	"github.com/switchyard/switchyard/pki"
	"github.com/switchyard/switchyard/transport"
)

// devMediaPortOffset places the dev media nodes' HTTP ports above the
// first agent's HTTP port: 7501 (the default) → 8081 and 8082.
const devMediaPortOffset = 580

// startDevMedia starts two media nodes in this process for the dev
// cluster: m1 with 2 units (so a third viewer is cascaded) and m2 with 10,
// and prints their demo page URLs. With identity (a certificate per node
// name) they talk to the agents over QUIC at quic and report load there;
// without, over the HTTP API at joins. With tokens (ACLs on) they require
// WHIP/WHEP tokens, and the printed demo links carry one each (minted
// with this process's operator token for room demo, valid a day). The
// returned stop closes them.
func startDevMedia(ctx context.Context, out io.Writer, log *slog.Logger, host string, joins, quic []string, identity func(name string) (*pki.Identity, error), tokens bool) (stop func(), err error) {
	var nodes []*media.Node
	var closers []func() error
	_, p, err := net.SplitHostPort(joins[0])
	if err != nil {
		return nil, fmt.Errorf("dev media nodes: %w", err)
	}
	firstPort, err := strconv.Atoi(p)
	if err != nil {
		return nil, fmt.Errorf("dev media nodes: port %q: %w", p, err)
	}
	firstPort += devMediaPortOffset
	// Interrupted while starting (Ctrl-C early) is a normal stop; every
	// error path below has closed what it started.
	defer func() {
		if err != nil && ctx.Err() != nil {
			stop, err = func() {}, nil
		}
	}()
	stop = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for _, n := range nodes {
			_ = n.Close(sctx)
		}
		for _, c := range closers {
			_ = c()
		}
	}
	var pubFrag, playFrag string
	var keys *mediatoken.Keyring
	var refresh func(context.Context) error
	if tokens {
		cl := api.NewClient(joins...)
		var frags [2]string
		for i, action := range []string{mediatoken.Publish, mediatoken.Play} {
			tok, err := cl.MintMediaToken(ctx, api.MintRequest{Room: "demo", Action: action, TTLMs: (24 * time.Hour).Milliseconds()})
			if err != nil {
				return nil, fmt.Errorf("dev demo %s token: %w", action, err)
			}
			frags[i] = "#token=" + tok.Token
		}
		pubFrag, playFrag = frags[0], frags[1]
		// The first mint made the cluster's first media key.
		if keys, refresh, err = fetchMediaKeys(ctx, joins, nil, log); err != nil {
			return nil, err
		}
	}
	for i, capacity := range []int64{2, 10} {
		id := fmt.Sprintf("m%d", i+1)
		var cl media.Cluster = media.NewHTTPCluster(id, joins...)
		if identity != nil {
			tlsID, err := identity(id)
			if err != nil {
				stop()
				return nil, err
			}
			qc, err := media.NewQUICCluster(id, quic, joins, tlsID.ClientConfig(transport.ALPN), log.With("node", id))
			if err != nil {
				stop()
				return nil, err
			}
			closers = append(closers, qc.Close)
			cl = qc
		}
		n, err := media.New(media.Config{ID: id, Capacity: capacity, CascadeIdle: 10 * time.Second, Logger: log.With("node", id),
			Tokens: keys, RefreshTokens: refresh}, cl)
		if err != nil {
			stop()
			return nil, err
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", host, firstPort+i))
		if err != nil {
			stop()
			return nil, fmt.Errorf("media node %s: %w", id, err)
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = n.Start(sctx, ln)
		cancel()
		if err != nil {
			stop()
			return nil, err
		}
		nodes = append(nodes, n)
		fmt.Fprintf(out, "  media %s  capacity=%d  demo page: %s/\n", id, capacity, n.BaseURL())
	}
	fmt.Fprintf(out, "open %[1]s/?publish=demo%[3]s in one tab and %[1]s/?watch=demo%[4]s in three more:\nthe third viewer is redirected to m2 through a cascade ('%[2]s alloc list' shows it,\n'%[2]s server list' the nodes' reported load).\n", nodes[0].BaseURL(), os.Args[0], pubFrag, playFrag)
	if tokens {
		fmt.Fprintf(out, "(the media nodes require WHIP/WHEP tokens: the links carry one each for room demo; '%s token mint --room R --publish|--play' makes more)\n", os.Args[0])
	}
	return stop, nil
}
