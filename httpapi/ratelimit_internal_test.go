package httpapi

import (
	"fmt"
	"testing"
)

func TestAnonSource(t *testing.T) {
	tests := []struct{ remote, want string }{
		{"192.0.2.7:5000", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:5000", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff:ffff:ffff:ffff]:1", "2001:db8:1:2::/64"},
		{"pipe", ""},
	}
	for _, tc := range tests {
		if got := anonSource(tc.remote); got != tc.want {
			t.Errorf("anonSource(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}

// Anonymous sources past the map's bound are forgotten; a credential's
// spent bucket is not (flooding from many addresses must not reset the
// limits of a token).
func TestRateLimitsKeepCredentialsThroughAnonymousFlood(t *testing.T) {
	// A token refills once in ~12 days: however long the flood takes, the
	// spent bucket stays spent unless it is forgotten.
	l := &rateLimits{token: 1e-6, anon: 1}
	for {
		if ok, _ := l.allow("p:token:t1", false); !ok {
			break
		}
	}
	for i := 0; i <= maxAnonBuckets+1; i++ {
		l.allow(fmt.Sprintf("a:198.51.%d.%d", i/256, i%256)+fmt.Sprint(i), true)
	}
	if ok, _ := l.allow("p:token:t1", false); ok {
		t.Fatal("a token's spent bucket was reset by a flood of anonymous sources")
	}
	if len(l.anonBuckets) > maxAnonBuckets {
		t.Fatalf("%d anonymous buckets kept, bound %d", len(l.anonBuckets), maxAnonBuckets)
	}
}
