package media

import (
	_ "embed"
	"net/http"
)

//go:embed demo/index.html
var demoPage []byte

// serveDemo serves the demo page: publish camera/microphone to a room
// (WHIP) and watch a room (WHEP), plain HTML/JS.
func serveDemo(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(demoPage)
}
