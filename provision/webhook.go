package provision

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
)

// Webhook POSTs the spec as JSON (Content-Type application/json) to URL for
// every action; any 2xx answer means accepted. The request is bounded by
// the context.
type Webhook struct {
	URL string
	// Header adds headers (e.g. Authorization) to every request.
	Header http.Header
	// Client sends the requests; nil uses a client without its own timeout
	// (the context bounds each call).
	Client *http.Client
}

// Name implements Provider.
func (w *Webhook) Name() string { return "webhook" }

// Provision implements Provider.
func (w *Webhook) Provision(ctx context.Context, spec Spec) error {
	spec.Action = ActionProvision
	return w.post(ctx, spec)
}

// Deprovision implements Provider.
func (w *Webhook) Deprovision(ctx context.Context, spec Spec) error {
	spec.Action = ActionDeprovision
	return w.post(ctx, spec)
}

func (w *Webhook) post(ctx context.Context, spec Spec) error {
	if w.URL == "" {
		return fmt.Errorf("%w: webhook: no URL configured", ErrProvider)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(spec.JSON()))
	if err != nil {
		return fmt.Errorf("%w: webhook %s: %w", ErrProvider, w.URL, err)
	}
	for k, v := range w.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	hc := w.Client
	if hc == nil {
		hc = &http.Client{}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: webhook %s (%s %s): %w", ErrProvider, w.URL, spec.Action, spec.ServerID, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: webhook %s (%s %s): %s: %s", ErrProvider, w.URL, spec.Action, spec.ServerID, resp.Status, tail(body, 512))
	}
	return nil
}
