// Package ui is the live dashboard every agent serves at /ui/: a page, a
// script and a style sheet embedded in the binary (plain JavaScript, no
// outside code, nothing fetched from elsewhere) that read the agent's own
// JSON API: they poll /v1/overview (every member's status and counters)
// and the page of /v1/servers (with load) the server table shows, 50
// servers a request (those in one state when the table's state filter is
// set: ?state=), and follow /v1/watch (servers, allocations, intents,
// the policy, rooms) as Server-Sent Events for the totals. When the agent
// knows no leader the page says so and shows the agent's local replica
// (?stale=true).
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves the dashboard's files; mount it with the /ui prefix
// stripped.
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	fsrv := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		fsrv.ServeHTTP(w, r)
	})
}
