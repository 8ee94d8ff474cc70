package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/switchyard/switchyard/media"
)

// devMediaPort is the first media node's HTTP port in `switchyard dev`.
const devMediaPort = 8081

// startDevMedia starts two media nodes in this process for the dev
// cluster: m1 with 2 units (so a third viewer is cascaded) and m2 with 10,
// both registered through the agents' HTTP API at joins, and prints their
// demo page URLs. The returned stop closes them.
func startDevMedia(ctx context.Context, out io.Writer, log *slog.Logger, host string, joins []string) (stop func(), err error) {
	var nodes []*media.Node
	stop = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for _, n := range nodes {
			_ = n.Close(sctx)
		}
	}
	for i, capacity := range []int64{2, 10} {
		id := fmt.Sprintf("m%d", i+1)
		n, err := media.New(media.Config{ID: id, Capacity: capacity, CascadeIdle: 10 * time.Second, Logger: log.With("node", id)}, media.NewHTTPCluster(id, joins...))
		if err != nil {
			stop()
			return nil, err
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", host, devMediaPort+i))
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
	fmt.Fprintf(out, "open %s/?publish=demo in one tab and %s/?watch=demo in three more:\nthe third viewer is redirected to m2 through a cascade ('switchyard alloc list' shows it).\n", nodes[0].BaseURL(), nodes[0].BaseURL())
	return stop, nil
}
