package cluster

import (
	"context"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// raftLogger routes hashicorp/raft's hclog output into our slog logger, at
// the level hclog gave each line, so --log-level and the log format apply
// to raft too.
func raftLogger(name string, log *slog.Logger) hclog.Logger {
	lvl := hclog.Error
	for _, c := range []struct {
		s slog.Level
		h hclog.Level
	}{{slog.LevelDebug, hclog.Debug}, {slog.LevelInfo, hclog.Info}, {slog.LevelWarn, hclog.Warn}} {
		if log.Enabled(context.Background(), c.s) {
			lvl = c.h
			break
		}
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: lvl, Output: &slogWriter{log: log.With("component", "raft")}, DisableTime: true})
}

type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	// hclog puts the level tag first; a tag-like text later in the
	// message does not count.
	for _, t := range []struct {
		tag string
		l   slog.Level
	}{{"[ERROR]", slog.LevelError}, {"[WARN]", slog.LevelWarn}, {"[INFO]", slog.LevelInfo}, {"[DEBUG]", slog.LevelDebug}, {"[TRACE]", slog.LevelDebug}} {
		if strings.HasPrefix(line, t.tag) {
			level = t.l
			line = strings.TrimSpace(line[len(t.tag):])
			break
		}
	}
	if level == slog.LevelError {
		level = demote(line)
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}

// demote lowers raft's ERROR lines that describe normal events: a leader
// change seen by the old leader, this node's own shutdown, and a peer that
// is down or restarting (still a warning: an outage shows, a leader change
// or Ctrl-C does not look like one).
func demote(line string) slog.Level {
	switch {
	case strings.Contains(line, "peer has newer term"):
		return slog.LevelInfo
	case strings.Contains(line, "transport shutdown"):
		return slog.LevelDebug
	case strings.Contains(line, "failed to appendEntries to"), strings.Contains(line, "failed to heartbeat to"),
		strings.Contains(line, "failed to make requestVote RPC"), strings.Contains(line, "failed to decode incoming command"):
		return slog.LevelWarn
	}
	return slog.LevelError
}
