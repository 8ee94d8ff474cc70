package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// Raft's lines reach the log at their own level with the level tag taken
// off; ERROR lines describing normal events are demoted.
func TestRaftLogLevels(t *testing.T) {
	for _, tc := range []struct{ in, level, msg string }{
		{"[INFO]  raft: entering follower state", "INFO", `"raft: entering follower state"`},
		{"[WARN]  raft: heartbeat timeout reached", "WARN", `"raft: heartbeat timeout reached"`},
		{"[DEBUG] raft: votes: needed=2", "DEBUG", `"raft: votes: needed=2"`},
		{"[ERROR] raft: failed to take snapshot: disk", "ERROR", `"raft: failed to take snapshot: disk"`},
		{"no tag at all", "INFO", `"no tag at all"`},
		{"[WARN]  raft: peer said [ERROR] in passing", "WARN", `"raft: peer said [ERROR] in passing"`},
	} {
		var b bytes.Buffer
		w := &slogWriter{log: slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		if _, err := w.Write([]byte(tc.in + "\n")); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if !strings.Contains(out, "level="+tc.level+" ") || !strings.Contains(out, "msg="+tc.msg) {
			t.Errorf("%q logged as %q, want level %s and msg %s", tc.in, out, tc.level, tc.msg)
		}
	}
}
