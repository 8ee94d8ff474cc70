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
	for tag, l := range map[string]slog.Level{"[ERROR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug} {
		if i := strings.Index(line, tag); i >= 0 {
			level = l
			line = strings.TrimSpace(line[i+len(tag):])
			break
		}
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}
