package sidecar

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// TestParseLiveKitMetrics: the parser of LiveKit's Prometheus endpoint
// gives the byte counters, subscribed tracks and process start time of a
// good body, and for anything else says which figure it cannot give and
// why, without losing the others.
func TestParseLiveKitMetrics(t *testing.T) {
	const (
		// As livekit-server v1.13.5 prints them.
		bytes = `# HELP livekit_packet_bytes packet bytes
# TYPE livekit_packet_bytes counter
livekit_packet_bytes{country="",direction="incoming",node_id="ND_x",node_type="SERVER",transmission="initial"} 1000
livekit_packet_bytes{country="",direction="incoming",node_id="ND_x",node_type="SERVER",transmission="retransmit"} 24
livekit_packet_bytes{country="",direction="outgoing",node_id="ND_x",node_type="SERVER",transmission="initial"} 2.5e+06
`
		subscribed = `livekit_track_subscribed_total{kind="audio",node_id="ND_x",node_type="SERVER"} 2
livekit_track_subscribed_total{kind="video",node_id="ND_x",node_type="SERVER"} 3
`
		start = `# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.79668892007e+09
`
		// Series whose names begin like the ones read.
		lookalikes = "process_start_time_seconds_total 5\nlivekit_packet_bytes_sum 7\nlivekit_track_subscribed_total_x 9\n"
	)
	tests := []struct {
		name     string
		body     string
		err      string // of the whole body
		in, out  float64
		subs     int64
		bytesErr string // "" when the counters are usable
		start    float64
		startErr string // "" when the start time is usable
	}{
		{name: "good body", body: bytes + subscribed + start + lookalikes, in: 1024, out: 2.5e6, subs: 5, start: 1796688920.07},
		{name: "sample timestamps", body: strings.ReplaceAll(bytes, "\n", " 1796688999000\n") + "process_start_time_seconds 1.5e9 1796688999000\n",
			in: 1024, out: 2.5e6, start: 1.5e9},
		{name: "start time with labels", body: bytes + `process_start_time_seconds{job="lk"} 1.5e9` + "\n", in: 1024, out: 2.5e6, start: 1.5e9},
		// An idle LiveKit has no packet counters yet: its start time still
		// counts.
		{name: "no byte counters", body: subscribed + start, bytesErr: "have no livekit_packet_bytes", start: 1796688920.07},
		{name: "no start time", body: bytes + subscribed, in: 1024, out: 2.5e6, subs: 5, startErr: "have no process_start_time_seconds"},
		{name: "empty", body: "", bytesErr: "have no livekit_packet_bytes", startErr: "have no process_start_time_seconds"},
		{name: "not prometheus", body: "<html><body>hello</body></html>\n\x00\xff\xfe garbage {}} 12\n",
			bytesErr: "have no livekit_packet_bytes", startErr: "have no process_start_time_seconds"},
		{name: "garbage start time", body: bytes + "process_start_time_seconds yesterday\n", in: 1024, out: 2.5e6, startErr: `bad process_start_time_seconds sample "process_start_time_seconds yesterday"`},
		{name: "start time without value", body: bytes + "process_start_time_seconds{job=\"lk\"\n", in: 1024, out: 2.5e6, startErr: "bad process_start_time_seconds sample"},
		{name: "huge start time", body: bytes + "process_start_time_seconds 1e300\n", in: 1024, out: 2.5e6, startErr: "1e300 is not a plausible Unix time"},
		{name: "start time past 2^34", body: bytes + "process_start_time_seconds 17179869185\n", in: 1024, out: 2.5e6, startErr: "not a plausible Unix time"},
		{name: "infinite start time", body: bytes + "process_start_time_seconds +Inf\n", in: 1024, out: 2.5e6, startErr: "not a plausible Unix time"},
		{name: "NaN start time", body: bytes + "process_start_time_seconds NaN\n", in: 1024, out: 2.5e6, startErr: "not a plausible Unix time"},
		{name: "negative start time", body: bytes + "process_start_time_seconds -1\n", in: 1024, out: 2.5e6, startErr: "not a plausible Unix time"},
		{name: "zero start time", body: bytes + "process_start_time_seconds 0\n", in: 1024, out: 2.5e6, startErr: "not a plausible Unix time"},
		{name: "two start times", body: bytes + start + "process_start_time_seconds 1.5e9\n", in: 1024, out: 2.5e6, startErr: "appears more than once"},
		// A bad byte counter spoils the counters (and the subscribed
		// tracks read with them), not the start time.
		{name: "garbage byte counter", body: subscribed + start + `livekit_packet_bytes{direction="incoming"} lots` + "\n" + bytes,
			bytesErr: "bad livekit_packet_bytes sample", start: 1796688920.07},
		{name: "huge byte counter", body: start + `livekit_packet_bytes{direction="incoming"} 1e400` + "\n", bytesErr: "bad livekit_packet_bytes sample", start: 1796688920.07},
		{name: "byte counter without value", body: start + `livekit_packet_bytes{direction="incoming"` + "\n", bytesErr: "bad livekit_packet_bytes sample", start: 1796688920.07},
		{name: "huge subscribed tracks left out", body: bytes + start + `livekit_track_subscribed_total{kind="video"} 1e30` + "\n" + `livekit_track_subscribed_total{kind="audio"} 4` + "\n",
			in: 1024, out: 2.5e6, subs: 4, start: 1796688920.07},
		{name: "line too long", body: start + "# " + strings.Repeat("x", maxMetricsLine) + "\n", err: "token too long"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := parseLiveKitMetrics(strings.NewReader(tc.body))
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrBadAnswer) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkErr(t, "byte counters", rd.bytesErr, tc.bytesErr)
			checkErr(t, "start time", rd.startErr, tc.startErr)
			if rd.in != tc.in || rd.out != tc.out || rd.subscribed != tc.subs || rd.start != tc.start {
				t.Fatalf("in %v out %v subscribed %d start %v, want %v %v %d %v", rd.in, rd.out, rd.subscribed, rd.start, tc.in, tc.out, tc.subs, tc.start)
			}
		})
	}
}

func checkErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("%s: %v", what, err)
	case want != "" && (err == nil || !errors.Is(err, ErrBadAnswer) || !strings.Contains(err.Error(), want)):
		t.Fatalf("%s: error %v, want one saying %q", what, err, want)
	}
}

// TestParseLiveKitMetricsBounded: a body is read to maxLiveKitMetrics
// bytes and no further; a longer one is refused whole, since its figures
// may lie past the bound.
func TestParseLiveKitMetricsBounded(t *testing.T) {
	line := "# " + strings.Repeat("x", 1000) + "\n"
	fill := strings.Repeat(line, maxLiveKitMetrics/len(line))
	start := "process_start_time_seconds 1.5e9\n"
	// Exactly at the bound: read through.
	body := fill + start
	body = strings.Repeat("#", maxLiveKitMetrics-len(body)-1) + "\n" + body
	if rd, err := parseLiveKitMetrics(strings.NewReader(body)); err != nil || rd.start != 1.5e9 {
		t.Fatalf("a body of %d bytes: start %v, %v", len(body), rd.start, err)
	}
	// One byte more is refused, and reading stops about there however long
	// the body goes on.
	src := &countingReader{r: io.MultiReader(strings.NewReader("#"+body), endless{})}
	if _, err := parseLiveKitMetrics(src); !errors.Is(err, errMetricsTooLong) {
		t.Fatalf("an endless body: %v", err)
	}
	if src.n > maxLiveKitMetrics+1 {
		t.Fatalf("read %d bytes of an endless body", src.n)
	}
}

// endless is an endless body of comment lines.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = "# more\n"[i%7]
	}
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
