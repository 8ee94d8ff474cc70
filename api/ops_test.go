package api

import "testing"

func TestResendable(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"POST", "/v1/allocations", true},
		{"POST", "/v1/allocations/batch", true},
		{"DELETE", "/v1/allocations/a1", true},
		{"POST", "/v1/servers", true},
		{"POST", "/v1/rooms/r1/placement", true},
		{"GET", "/v1/acl/tokens", true},
		{"DELETE", "/v1/acl/tokens/t1", true},
		{"POST", "/v1/acl/tokens", false},
		{"POST", "/v1/acl/tokens?pretty", false},
		{"POST", "/v1/acl/bootstrap", false},
		{"POST", "/v1/operator/transfer-leader", false},
		{"POST", "/v1/media/keys/rotate", false},
		{"GET", "/v1/media/keys", true},
	} {
		if got := Resendable(tc.method, tc.path); got != tc.want {
			t.Errorf("Resendable(%s %s) = %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
}
