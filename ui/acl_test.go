package ui_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/pki"
)

// TestDashboardWithACL loads the dashboard from agents with ACLs on and
// the API over HTTPS: opened as /ui/#token=<reader token>, the page reads
// the servers and follows the change stream with that token (the token
// leaves the address bar); opened without one, it asks for a token.
func TestDashboardWithACL(t *testing.T) {
	bin := needChromium(t)
	c := testcluster.New(t, 3, testcluster.Options{RaftTLS: true, Mutate: func(_ int, cfg *agent.Config) {
		cfg.ACL, cfg.HTTPS = true, true
	}})
	tc, err := pki.CAClientConfig(c.CA.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	ctx0, cancel0 := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel0()
	boot, err := c.Client().WithTLS(tc).WithToken("").ACLBootstrap(ctx0)
	if err != nil {
		t.Fatal(err)
	}
	op := c.Client().WithTLS(tc).WithToken(boot.Secret)
	reader, err := op.ACLCreateToken(ctx0, api.CreateTokenRequest{Role: "reader", Description: "dashboard"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := op.RegisterServer(ctx0, api.RegisterServerRequest{ID: fmt.Sprintf("m%d", i), Capacity: 10}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := op.Allocate(ctx0, api.AllocateRequest{RequestID: fmt.Sprintf("a%d", i), Room: "r", Units: 1}); err != nil {
			t.Fatal(err)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.IgnoreCertErrors, chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1400, 1200))
	actx, acancel := chromedp.NewExecAllocator(ctx0, opts...)
	defer acancel()

	base := "https://" + c.Followers()[0].Cfg.HTTPAddr + "/ui/"
	t.Run("with a token", func(t *testing.T) {
		bctx, bcancel := chromedp.NewContext(actx)
		defer bcancel()
		ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Navigate(base+"#token="+reader.Secret)); err != nil {
			t.Fatalf("chromium: %v", err)
		}
		testcluster.Eventually(t, 60*time.Second, func() error {
			n, err := text(ctx, "#servers-count")
			if err != nil || n != "5" {
				return fmt.Errorf("servers on the page: %q %v", n, err)
			}
			// The server table's page, read with the token, and its total
			// from the answer's X-Total-Count.
			if s, err := text(ctx, "#servers-shown"); err != nil || s != "showing 1–5 of 5" {
				return fmt.Errorf("server table: %q %v", s, err)
			}
			// Allocations arrive over the change stream.
			a, err := text(ctx, "#alloc-active")
			if err != nil || a != "3" {
				return fmt.Errorf("active allocations on the page: %q %v", a, err)
			}
			return nil
		})
		// A new allocation shows without a reload (the stream is live).
		if _, err := op.Allocate(ctx0, api.AllocateRequest{RequestID: "a-live", Room: "r", Units: 1}); err != nil {
			t.Fatal(err)
		}
		testcluster.Eventually(t, 30*time.Second, func() error {
			if a, err := text(ctx, "#alloc-active"); err != nil || a != "4" {
				return fmt.Errorf("active allocations on the page: %q %v", a, err)
			}
			return nil
		})
		href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
		if err != nil || href != base {
			t.Fatalf("address bar %q (%v): the token must leave it", href, err)
		}
		screenshot(t, ctx, "dashboard-acl.png")
	})

	t.Run("without a token", func(t *testing.T) {
		bctx, bcancel := chromedp.NewContext(actx)
		defer bcancel()
		ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Navigate(base)); err != nil {
			t.Fatalf("chromium: %v", err)
		}
		testcluster.Eventually(t, 60*time.Second, func() error {
			if s, err := text(ctx, "#token-form"); err != nil || s == "" {
				return fmt.Errorf("no token form: %q %v", s, err)
			}
			return nil
		})
		if n, _ := text(ctx, "#servers-count"); n == "5" {
			t.Fatal("the page shows the servers without a token")
		}
	})
}
