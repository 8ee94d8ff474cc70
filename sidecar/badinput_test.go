package sidecar_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/errcode"
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

// LiveKit's Prometheus endpoint feeding the server's bitrates and
// subscribed tracks: what it answers never fails a poll (the rooms stand,
// the bitrates and tracks are 0), only a counter that grew by a plausible
// amount since the last poll becomes a bitrate, and only a plausible
// gauge becomes subscribed tracks.
func TestLiveKitMetricsBadAnswers(t *testing.T) {
	const rooms = `{"rooms":[{"name":"r1","num_participants":2,"num_publishers":1}]}`
	counters := func(in, out string) string {
		return "# TYPE livekit_packet_bytes counter\n" +
			`livekit_packet_bytes{country="",direction="incoming",node_id="n",node_type="SERVER",transmission="initial"} ` + in + "\n" +
			`livekit_packet_bytes{country="",direction="outgoing",node_id="n",node_type="SERVER",transmission="initial"} ` + out + "\n"
	}
	subscribed := func(audio, video string) string {
		return "# TYPE livekit_track_subscribed_total gauge\n" +
			`livekit_track_subscribed_total{kind="audio",node_id="n",node_type="SERVER"} ` + audio + "\n" +
			`livekit_track_subscribed_total{kind="video",node_id="n",node_type="SERVER"} ` + video + "\n"
	}
	tests := []struct {
		name    string
		metrics []string // answered in turn, one per poll
		rate    bool     // bitrates at the last poll
		subs    int64    // subscribed tracks at the last poll
	}{
		{"subscribed tracks over kinds", []string{counters("1000", "2000") + subscribed("2", "3")}, false, 5},
		{"subscribed tracks with rates", []string{counters("1000", "2000"), subscribed("0", "7") + counters("1000000", "3000000")}, true, 7},
		{"absurd subscribed tracks", []string{counters("1000", "2000") + subscribed("1e30", "1")}, false, 1},
		{"negative subscribed tracks", []string{counters("0", "0"), counters("1000", "1000") + subscribed("-1", "1")}, true, 1},
		{"NaN subscribed tracks", []string{counters("0", "0"), counters("1000", "1000") + subscribed("NaN", "2")}, true, 2},
		{"subscribed tracks without counters", []string{subscribed("1", "1")}, false, 0},
		{"first reading has no rate", []string{counters("1000", "2000")}, false, 0},
		{"growing counters", []string{counters("1000", "2000"), counters("1000000", "3000000")}, true, 0},
		{"counter reset", []string{counters("5000000", "5000000"), counters("10", "10")}, false, 0},
		{"not prometheus", []string{counters("0", "0"), "<html>hello</html>"}, false, 0},
		{"NaN and negative", []string{counters("0", "0"), counters("NaN", "-5")}, false, 0},
		{"beyond 1 TiB/s", []string{counters("0", "0"), counters("1e30", "1e30")}, false, 0},
		{"no such metric", []string{counters("0", "0"), "# TYPE other counter\nother 5\n"}, false, 0},
		// A bad reading is not kept: the next good one is measured from the
		// last good one, not from the bad one's zero (which made a rate of
		// the whole counter over one interval).
		{"garbage, then good", []string{counters("50e9", "50e9"), "<html>hello</html>", counters("50.001e9", "50.001e9")}, true, 0},
		{"no counter, then good", []string{counters("50e9", "50e9"), "# TYPE other counter\nother 5\n", counters("50.001e9", "50.001e9")}, true, 0},
		{"NaN, then good", []string{counters("50e9", "50e9"), counters("NaN", "50e9"), counters("50.001e9", "50.001e9")}, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			next := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/metrics" {
					_, _ = w.Write([]byte(rooms))
					return
				}
				mu.Lock()
				defer mu.Unlock()
				_, _ = w.Write([]byte(tc.metrics[min(next, len(tc.metrics)-1)]))
				next++
			}))
			defer srv.Close()
			l, err := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: srv.URL, APIKey: "k", APISecret: "s", MetricsURL: srv.URL + "/metrics"})
			if err != nil {
				t.Fatal(err)
			}
			var st sidecar.Status
			for range tc.metrics {
				time.Sleep(10 * time.Millisecond) // the rate needs time between readings
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				st, err = l.Poll(ctx)
				cancel()
				if err != nil {
					t.Fatalf("poll: %v", err)
				}
				if len(st.Rooms) != 1 || st.Rooms[0].Participants != 2 {
					t.Fatalf("rooms %+v", st.Rooms)
				}
			}
			if (st.IngressBps > 0) != tc.rate || (st.EgressBps > 0) != tc.rate || st.IngressBps < 0 || st.EgressBps < 0 {
				t.Fatalf("bitrates in %d out %d bit/s", st.IngressBps, st.EgressBps)
			}
			if st.SubscribedTracks != tc.subs {
				t.Fatalf("subscribed tracks %d, want %d", st.SubscribedTracks, tc.subs)
			}
			// The counters grew by at most 3e6 bytes between readings at
			// least 10 ms apart.
			if st.IngressBps > 8*3e6/0.01 || st.EgressBps > 8*3e6/0.01 {
				t.Fatalf("bitrates in %d out %d bit/s: more than the counters grew", st.IngressBps, st.EgressBps)
			}
		})
	}
	// A metrics endpoint that does not answer costs a poll at most the
	// metrics timeout: the rooms come back in time, without bitrates.
	hang := make(chan struct{})
	defer close(hang)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = w.Write([]byte(rooms))
	}))
	defer srv.Close()
	l, _ := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: srv.URL, APIKey: "k", APISecret: "s", MetricsURL: srv.URL + "/metrics", MetricsTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	st, err := l.Poll(ctx)
	if err != nil || len(st.Rooms) != 1 || st.IngressBps != 0 {
		t.Fatalf("poll with a hanging metrics endpoint: %+v %v", st, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("poll with a hanging metrics endpoint took %v", d)
	}
	if err := l.CheckMetrics(ctx); !errors.Is(err, sidecar.ErrUnavailable) {
		t.Fatalf("check of a hanging metrics endpoint: %v", err)
	}
	if _, err := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: "ws://h:7880", APIKey: "k", APISecret: "s", MetricsURL: "h:6789"}); !errors.Is(err, errcode.ErrInvalid) {
		t.Fatalf("metrics URL without a scheme: %v", err)
	}
}

// LiveKit's process is told by its metrics' process_start_time_seconds:
// a new start time is a new instance, even between two polls; a reading
// that fails or has no usable start time keeps the last instance (it says
// nothing of a restart), and without the metrics endpoint the instance is
// unknown (empty).
func TestLiveKitInstanceFromStartTime(t *testing.T) {
	const rooms = `{"rooms":[]}`
	counters := "livekit_packet_bytes{direction=\"incoming\"} 1\nlivekit_packet_bytes{direction=\"outgoing\"} 1\n"
	var mu sync.Mutex
	metrics := ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			_, _ = w.Write([]byte(rooms))
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if metrics == "fail" {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(metrics))
	}))
	defer srv.Close()
	answer := func(body string) {
		mu.Lock()
		metrics = body
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: srv.URL, APIKey: "k", APISecret: "s", MetricsURL: srv.URL + "/metrics"})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name, metrics, instance string
	}{
		{"no start time yet", counters, ""},
		{"garbage before any start time", "<html>", ""},
		{"first start time", counters + "process_start_time_seconds 1.79668892007e+09\n", "1796688920.07"},
		{"same process", counters + "process_start_time_seconds 1.79668892007e+09\n", "1796688920.07"},
		{"restarted between two polls (an idle one: no counters)", "process_start_time_seconds 1.79668893012e+09\n", "1796688930.12"},
		{"endpoint failing", "fail", "1796688930.12"},
		{"garbage", "\x00\xff<html>", "1796688930.12"},
		{"huge start time", counters + "process_start_time_seconds 1e300\n", "1796688930.12"},
		{"no start time", counters, "1796688930.12"},
		{"restarted again", counters + "process_start_time_seconds 1796688999\n", "1796688999"},
	}
	for _, s := range steps {
		answer(s.metrics)
		st, err := l.Poll(ctx)
		if err != nil {
			t.Fatalf("%s: poll: %v", s.name, err)
		}
		if st.Instance != s.instance {
			t.Fatalf("%s: instance %q, want %q", s.name, st.Instance, s.instance)
		}
	}
	// CheckMetrics says which part is unusable.
	answer(counters)
	if err := l.CheckMetrics(ctx); !errors.Is(err, sidecar.ErrBadAnswer) || !strings.Contains(err.Error(), "process_start_time_seconds") {
		t.Fatalf("check without a start time: %v", err)
	}
	answer(counters + "process_start_time_seconds 1796688999\n")
	if err := l.CheckMetrics(ctx); err != nil {
		t.Fatalf("check of a good endpoint: %v", err)
	}
	// Without the metrics endpoint the process cannot be told.
	plain, _ := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: srv.URL, APIKey: "k", APISecret: "s"})
	if st, err := plain.Poll(ctx); err != nil || st.Instance != "" {
		t.Fatalf("without metrics: %+v %v", st, err)
	}
}

// LiveKit's RoomService answering garbage, an error, a plain-text failure
// or nothing: a poll fails with the matching error, within the client's
// bounds, and nothing panics.
func TestLiveKitRoomServiceBadAnswers(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		hang   bool
		want   error
	}{
		{"garbage with 200", 200, "<html>not json</html>", false, sidecar.ErrBadAnswer},
		{"truncated JSON", 200, `{"rooms":[{"name":"r"`, false, sidecar.ErrBadAnswer},
		{"plain-text 500", 500, "internal error", false, sidecar.ErrBadAnswer},
		{"twirp error", 500, `{"code":"internal","msg":"boom"}`, false, sidecar.ErrRefused},
		{"wrong key or secret", 401, "unauthorized", false, sidecar.ErrRefused},
		{"no answer", 200, "", true, sidecar.ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hang := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.hang {
					select {
					case <-hang:
					case <-r.Context().Done():
					}
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			defer close(hang) // before Close, which waits for the handler
			l, err := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: srv.URL, APIKey: "k", APISecret: "s"})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err = l.Poll(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("poll: %v, want %v", err, tc.want)
			}
			if ctx.Err() != nil {
				t.Fatal("the poll ran to the test's deadline: unbounded")
			}
		})
	}
}
