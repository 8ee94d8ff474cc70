package httpapi

import (
	"testing"

	"github.com/switchyard/switchyard/acl"
)

// TestRoutePermDefaults: routes missing from the table are never open,
// except probes and static UI pages.
func TestRoutePermDefaults(t *testing.T) {
	for pattern, want := range map[string]acl.Perm{
		"GET /v1/health/live":             acl.PermNone,
		"GET /v1/health/ready":            acl.PermNone,
		"POST /v1/health/live":            acl.PermOperator,
		"POST /v1/deliver":                acl.PermOperator,
		"GET /ui/":                        acl.PermNone,
		"GET /v1/watch":                   acl.PermRead,
		"GET /v1/rooms/{room}":            acl.PermRead,
		"POST /v1/rooms/{room}/placement": acl.PermAllocate,
		"DELETE /v1/something/{id}":       acl.PermOperator,
		"PUT /v1/policy":                  acl.PermOperator,
		"GET /v1/snapshot":                acl.PermOperator,
		"/":                               acl.PermOperator,
	} {
		if got := routePerm(pattern); got != want {
			t.Errorf("%s: %v, want %v", pattern, got, want)
		}
	}
}
