package sidecar

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// maxLiveKitMetrics bounds the metrics body read each poll (LiveKit's is
// ~15 KB on an idle server); a longer one is refused whole, since what
// lies past the bound may hold the figures. maxMetricsLine bounds one line.
const (
	maxLiveKitMetrics = 4 << 20
	maxMetricsLine    = 64 << 10
)

// maxStartTime bounds a believable process start time in Unix seconds
// (2^34 s is in the year 2514).
const maxStartTime = 1 << 34

// The series of LiveKit's Prometheus endpoint that the sidecar reads.
const (
	metricPacketBytes = "livekit_packet_bytes"
	metricSubscribed  = "livekit_track_subscribed_total"
	// metricStartTime is the standard process collector's gauge of the
	// Prometheus Go client, which livekit-server exports: the process's
	// start time in Unix seconds (on Linux from /proc, to 10 ms). A new
	// value means a new LiveKit process.
	metricStartTime = "process_start_time_seconds"
)

// errMetricsTooLong says the metrics body passed maxLiveKitMetrics.
var errMetricsTooLong = fmt.Errorf("%w: livekit metrics longer than %d bytes", ErrBadAnswer, maxLiveKitMetrics)

// liveKitReading is one parse of LiveKit's Prometheus text exposition.
// Each figure comes with the reason it is unusable (nil when usable), so
// that a body with bad byte counters still gives the start time, and the
// other way round.
type liveKitReading struct {
	// in and out are the packet byte counters (livekit_packet_bytes) by
	// direction, summed over their other labels; subscribed is the
	// subscribed-tracks gauge summed over its kinds (a value that is not
	// a finite non-negative number, or above maxSubscribedTracks, is left
	// out; absent counts as 0). All three are 0 when bytesErr is set.
	in, out    float64
	subscribed int64
	bytesErr   error
	// start is the process start time (process_start_time_seconds),
	// Unix seconds, when startErr is nil.
	start    float64
	startErr error
}

// parseLiveKitMetrics parses a metrics body, reading at most
// maxLiveKitMetrics bytes of it; only the lines of the series above are
// looked at. The error is for a body that cannot be read through (too
// long, a line over maxMetricsLine, a failed read): nothing of it is then
// used.
func parseLiveKitMetrics(r io.Reader) (liveKitReading, error) {
	var rd liveKitReading
	foundBytes, foundStart := false, false
	sc := bufio.NewScanner(&cappedReader{r: io.LimitReader(r, maxLiveKitMetrics+1), max: maxLiveKitMetrics})
	sc.Buffer(make([]byte, 0, 4<<10), maxMetricsLine)
	for sc.Scan() {
		line := sc.Text()
		name, labels, value, ok := metricSample(line)
		if !ok {
			continue
		}
		v, perr := strconv.ParseFloat(value, 64)
		bad := perr != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0
		switch name {
		case metricSubscribed:
			// A gauge LiveKit adds to and takes from: a bad value of it
			// is left out, the byte counters still count.
			if !bad && v <= maxSubscribedTracks {
				rd.subscribed += int64(v)
			}
		case metricPacketBytes:
			switch {
			case rd.bytesErr != nil:
			case bad:
				rd.bytesErr = fmt.Errorf("%w: livekit metrics: bad %s sample %q", ErrBadAnswer, name, truncate([]byte(line)))
			case strings.Contains(labels, `direction="incoming"`):
				rd.in += v
				foundBytes = true
			case strings.Contains(labels, `direction="outgoing"`):
				rd.out += v
				foundBytes = true
			}
		case metricStartTime:
			switch {
			case rd.startErr != nil:
			case foundStart:
				rd.startErr = fmt.Errorf("%w: livekit metrics: %s appears more than once", ErrBadAnswer, name)
			case perr != nil:
				rd.startErr = fmt.Errorf("%w: livekit metrics: bad %s sample %q", ErrBadAnswer, name, truncate([]byte(line)))
			case bad || v == 0 || v > maxStartTime:
				rd.startErr = fmt.Errorf("%w: livekit metrics: %s %s is not a plausible Unix time", ErrBadAnswer, name, value)
			default:
				rd.start, foundStart = v, true
			}
		}
	}
	if err := sc.Err(); err != nil {
		if !errors.Is(err, errMetricsTooLong) {
			err = fmt.Errorf("%w: livekit metrics: %v", ErrBadAnswer, err)
		}
		return liveKitReading{}, err
	}
	if !foundBytes && rd.bytesErr == nil {
		rd.bytesErr = fmt.Errorf("%w: livekit metrics have no %s", ErrBadAnswer, metricPacketBytes)
	}
	if rd.bytesErr != nil {
		rd.in, rd.out, rd.subscribed = 0, 0, 0
	}
	rd.subscribed = min(rd.subscribed, maxSubscribedTracks)
	if !foundStart && rd.startErr == nil {
		rd.startErr = fmt.Errorf("%w: livekit metrics have no %s", ErrBadAnswer, metricStartTime)
	}
	if rd.startErr != nil {
		rd.start = 0
	}
	return rd, nil
}

// metricSample splits a sample line of one of the series the sidecar
// reads into its name, labels (without braces; empty when it has none)
// and value (without the timestamp a sample may end with). ok is false
// for comments, other series and lines of these series without a value.
func metricSample(line string) (name, labels, value string, ok bool) {
	for _, n := range []string{metricPacketBytes, metricSubscribed, metricStartTime} {
		rest, found := strings.CutPrefix(line, n)
		if !found || rest == "" {
			continue
		}
		switch rest[0] {
		case '{':
			labels, rest, found = strings.Cut(rest[1:], "} ")
			if !found {
				// A sample of a series read, but without a value: an
				// empty one does not parse, so the figure is refused.
				return n, "", "", true
			}
		case ' ', '\t':
		default:
			continue // another series whose name starts with n
		}
		value, _, _ = strings.Cut(strings.TrimSpace(rest), " ")
		return n, labels, value, true
	}
	return "", "", "", false
}

// cappedReader fails a read that brings the total past max bytes (it is
// given a reader limited to max+1, so it never reads much further).
type cappedReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, errMetricsTooLong
	}
	return n, err
}
