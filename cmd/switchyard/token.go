package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/mediatoken"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint WHIP/WHEP tokens for applications",
		Long: `Media nodes started with --require-token accept a WHIP publish or a WHEP
play only with a token scoped to the room and the action, signed with a key
the cluster keeps and hands to media nodes (verified without a round trip):

  switchyard token mint --room demo --publish --ttl 10m
  curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/sdp" --data-binary @offer.sdp http://m1:8080/whip/demo

Minting needs the allocator (or operator) role. 'token rotate-key' adds a
new signing key; tokens signed with the previous key keep working until
they expire.`,
	}
	mf := &clientFlags{}
	var room string
	var publish, play bool
	var ttl time.Duration
	mint := &cobra.Command{
		Use:   "mint",
		Short: "Mint a token for one room and one action",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if room == "" {
				return usagef(cmd, "--room is required")
			}
			if publish == play {
				return usagef(cmd, "give exactly one of --publish and --play")
			}
			if ttl <= 0 || ttl > api.MaxMediaTokenTTL {
				return usagef(cmd, "--ttl must be between 1ms and %v", api.MaxMediaTokenTTL)
			}
			action := mediatoken.Play
			if publish {
				action = mediatoken.Publish
			}
			c, ctx, cancel, err := mf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			t, err := c.MintMediaToken(ctx, api.MintRequest{Room: room, Action: action, TTLMs: ttl.Milliseconds()})
			if err != nil {
				return err
			}
			if mf.json {
				return printJSON(cmd.OutOrStdout(), t)
			}
			fmt.Fprintln(cmd.OutOrStdout(), t.Token)
			return nil
		},
	}
	mf.register(mint, true)
	mint.Flags().StringVar(&room, "room", "", "the room (required)")
	mint.Flags().BoolVar(&publish, "publish", false, "allow publishing (WHIP)")
	mint.Flags().BoolVar(&play, "play", false, "allow playing (WHEP)")
	mint.Flags().DurationVar(&ttl, "ttl", api.DefaultMediaTokenTTL, "token lifetime (at most 24h)")

	rf := &clientFlags{}
	rotate := &cobra.Command{
		Use:   "rotate-key",
		Short: "Add a new signing key (the previous one stays valid for verification)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel, err := rf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			c.Retry = false
			var out map[string]any
			if err := c.RotateMediaKey(ctx, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "new signing key %v\n", out["kid"])
			return nil
		},
	}
	rf.register(rotate, false)
	cmd.AddCommand(mint, rotate)
	return cmd
}

// fetchMediaKeys loads the cluster's media keys (retrying for up to a
// minute while the agents cannot answer) and keeps them fresh every 15 s
// in the background until ctx ends. refresh reloads them at once (for a
// token naming a key rotated in since): one load at a time, at most one a
// second, each waiting at most 2 s.
//
// A cluster that has no media key yet (none is made before the first
// 'switchyard token mint' or 'token rotate-key') is not an error: the
// keyring starts empty, so WHIP and WHEP refuse every request (fail
// closed), and the first token presented, naming a key the node lacks,
// loads it.
//
// Over HTTPS the node presents its certificate (id, its QUIC client
// configuration; nil without TLS flags), which the agents accept as a
// media credential.
func fetchMediaKeys(ctx context.Context, allocs []string, id *tls.Config, log *slog.Logger) (kr *mediatoken.Keyring, refresh func(context.Context) error, err error) {
	cl := api.NewClient(allocs...).PresentCertificate(id)
	kr = &mediatoken.Keyring{}
	errNoKey := errors.New("the cluster has no media key yet (the first 'switchyard token mint' or 'token rotate-key' makes one)")
	load := func(ctx context.Context, d time.Duration) error {
		lctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		for {
			keys, err := cl.MediaKeys(lctx)
			if err == nil {
				if len(keys) == 0 {
					return errNoKey
				}
				kr.Set(keys)
				return nil
			}
			select {
			case <-lctx.Done():
				return err
			case <-time.After(time.Second):
			}
		}
	}
	switch err := load(ctx, time.Minute); {
	case errors.Is(err, errNoKey):
		log.Warn("--require-token: the cluster has no media key yet, so WHIP and WHEP refuse every request until 'switchyard token mint' (or 'token rotate-key') makes one; it is loaded as soon as a token names it")
	case err != nil:
		return nil, nil, fmt.Errorf("--require-token: fetch the media keys: %w", err)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(15 * time.Second):
				if err := load(ctx, 10*time.Second); err != nil && !errors.Is(err, errNoKey) {
					log.Warn("refresh media keys", "err", err)
				}
			}
		}
	}()
	lim := &refreshLimiter{every: time.Second}
	return kr, func(rctx context.Context) error {
		// The load runs on the node's context, not the request's: a
		// caller that goes away does not cut it short for the others.
		return lim.do(rctx, func() error { return load(ctx, 2*time.Second) })
	}, nil
}

// refreshLimiter runs at most one load at a time and starts one at most
// every interval after the last one ended: callers that come while a load
// runs share its outcome (each waiting until it ends or the caller's own
// context does), and callers within every of the last load's end return
// at once (the caller looks again with what that load brought).
type refreshLimiter struct {
	every time.Duration

	mu      sync.Mutex
	last    time.Time     // when the last load ended
	running chan struct{} // closed when the load in flight ends; nil when none
	err     error         // the outcome of the last load that ended
}

func (l *refreshLimiter) do(ctx context.Context, load func() error) error {
	l.mu.Lock()
	if l.running == nil {
		if !l.last.IsZero() && time.Since(l.last) < l.every {
			l.mu.Unlock()
			return nil
		}
		done := make(chan struct{})
		l.running = done
		go func() {
			err := load()
			l.mu.Lock()
			l.err, l.last, l.running = err, time.Now(), nil
			l.mu.Unlock()
			close(done)
		}()
	}
	done := l.running
	l.mu.Unlock()
	select {
	case <-done:
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
