package ports

import "testing"

// Ports handed out to a running test are never handed out again before it
// ends, even though nothing listens on them yet.
func TestFreeNeverRepeatsWhileHeld(t *testing.T) {
	seen := map[string]bool{}
	for range 3000 {
		a := Free(t, "tcp")
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
	}
}
