package sidecar_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/sidecar"
)

// A poll and a room creation that find no Janus session at once (the
// sidecar polls while it creates rooms) make one session between them,
// not one each.
func TestJanusOneSessionForConcurrentCalls(t *testing.T) {
	var mu sync.Mutex
	creates := 0
	second := make(chan struct{}) // closed when a second session is asked for
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Janus string `json:"janus"`
			Body  struct {
				Request string `json:"request"`
				Room    uint64 `json:"room"`
			} `json:"body"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // janus[/session[/handle]]
		var answer any
		switch {
		case len(parts) == 1 && req.Janus == "create":
			mu.Lock()
			creates++
			n := creates
			if n == 2 {
				close(second)
			}
			mu.Unlock()
			if n == 1 {
				// Hold the first session's making long enough for a
				// concurrent caller to ask for a second one (released at
				// once if it does).
				select {
				case <-second:
				case <-time.After(500 * time.Millisecond):
				case <-r.Context().Done():
				}
			}
			answer = map[string]any{"janus": "success", "data": map[string]any{"id": 1000 + n}}
		case len(parts) == 2 && req.Janus == "attach":
			answer = map[string]any{"janus": "success", "data": map[string]any{"id": 2000}}
		case len(parts) == 3 && req.Janus == "message" && req.Body.Request == "list":
			answer = map[string]any{"janus": "success", "plugindata": map[string]any{"data": map[string]any{"videoroom": "success", "list": []any{}}}}
		case len(parts) == 3 && req.Janus == "message" && req.Body.Request == "create":
			answer = map[string]any{"janus": "success", "plugindata": map[string]any{"data": map[string]any{"videoroom": "created", "room": req.Body.Room}}}
		default:
			answer = map[string]any{"janus": "error", "error": map[string]any{"code": 490, "reason": "unexpected request"}}
		}
		_ = json.NewEncoder(w).Encode(answer)
	}))
	defer srv.Close()
	j, err := sidecar.NewJanus(sidecar.JanusConfig{URL: srv.URL + "/janus"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, errs[0] = j.Poll(ctx)
	}()
	go func() {
		defer wg.Done()
		errs[1] = j.EnsureRoom(ctx, sidecar.RoomRef{Name: "r", Number: 7})
	}()
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("poll: %v; create room: %v", errs[0], errs[1])
	}
	mu.Lock()
	defer mu.Unlock()
	if creates != 1 {
		t.Fatalf("%d Janus sessions made, want 1", creates)
	}
}
