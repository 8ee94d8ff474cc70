package sidecar_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/switchyard/switchyard/sidecar"
)

// A Janus that answers garbage, errors, slowly or not at all gives clear
// errors within the caller's bound.
func TestJanusBadAnswers(t *testing.T) {
	release := make(chan struct{})
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    error
	}{
		{"garbage", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("<html>hello</html>")) }, sidecar.ErrBadAnswer},
		{"empty object", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("{}")) }, sidecar.ErrBadAnswer},
		{"janus error", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"janus":"error","error":{"code":403,"reason":"Unauthorized request (wrong or missing secret/token)"}}`))
		}, sidecar.ErrRefused},
		{"success without plugin data", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"janus":"success","data":{"id":7}}`))
		}, sidecar.ErrBadAnswer},
		{"slow", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}, sidecar.ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			defer func() {
				select {
				case <-release:
				default:
					if tc.name == "slow" {
						close(release)
					}
				}
			}()
			j, err := sidecar.NewJanus(sidecar.JanusConfig{URL: srv.URL + "/janus", AdminURL: srv.URL + "/admin", AdminSecret: "x"})
			if err != nil {
				t.Fatal(err)
			}
			// Only the slow SFU must outlast the poll's deadline; the
			// others get a deadline a loaded machine cannot miss.
			wait := 30 * time.Second
			if tc.name == "slow" {
				wait = 300 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			start := time.Now()
			_, err = j.Poll(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("poll: %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("poll took %v", d)
			}
		})
	}
	// Nothing listening.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	j, _ := sidecar.NewJanus(sidecar.JanusConfig{URL: url + "/janus"})
	if _, err := j.Poll(context.Background()); !errors.Is(err, sidecar.ErrUnavailable) {
		t.Fatalf("poll of a closed port: %v", err)
	}
	if err := j.SetAcceptNew(context.Background(), false); !errors.Is(err, sidecar.ErrUnsupported) {
		t.Fatalf("drain without admin URL: %v", err)
	}
	if _, err := sidecar.NewJanus(sidecar.JanusConfig{URL: "janus:8088"}); err == nil {
		t.Fatal("a URL without scheme was accepted")
	}
}
