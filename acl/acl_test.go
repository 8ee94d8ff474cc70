package acl_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/acl"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

type tokens map[string]*fsmpb.AclToken

func (t tokens) ACLTokenByHash(h string) (*fsmpb.AclToken, bool) { v, ok := t[h]; return v, ok }

func TestResolveExpiryWithLeeway(t *testing.T) {
	_, secret, err := acl.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Unix(1000, 0)
	src := tokens{acl.HashSecret(secret): {Id: "t1", SecretHash: acl.HashSecret(secret), Role: "reader", ExpiresAtUnixMs: exp.UnixMilli()}}
	for _, tc := range []struct {
		now time.Time
		ok  bool
	}{
		{exp.Add(-time.Hour), true},
		{exp.Add(acl.Leeway - time.Millisecond), true}, // skew within the leeway
		{exp.Add(acl.Leeway), false},
		{exp.Add(time.Hour), false},
	} {
		p, err := acl.Resolve(src, secret, tc.now)
		if tc.ok != (err == nil) {
			t.Fatalf("at %v: %+v %v", tc.now.Sub(exp), p, err)
		}
		if err != nil && !errors.Is(err, acl.ErrUnauthenticated) {
			t.Fatalf("expired token: %v", err)
		}
	}
	if _, err := acl.Resolve(src, secret+"x", exp.Add(-time.Hour)); !errors.Is(err, acl.ErrUnknownToken) {
		t.Fatalf("wrong secret: %v", err)
	}
}

func TestAuthorizeTable(t *testing.T) {
	for _, tc := range []struct {
		p      acl.Principal
		perm   acl.Perm
		server string
		want   error
	}{
		{acl.Anonymous, acl.PermNone, "", nil},
		{acl.Anonymous, acl.PermRead, "", acl.ErrUnauthenticated},
		{acl.Principal{Kind: "token", Role: "reader"}, acl.PermRead, "", nil},
		{acl.Principal{Kind: "token", Role: "reader"}, acl.PermAllocate, "", acl.ErrPermissionDenied},
		{acl.Principal{Kind: "token", Role: "allocator"}, acl.PermAllocate, "", nil},
		{acl.Principal{Kind: "token", Role: "allocator"}, acl.PermServer, "m1", acl.ErrPermissionDenied},
		{acl.Principal{Kind: "token", Role: "media"}, acl.PermServer, "m1", nil},
		{acl.Principal{Kind: "token", Role: "media"}, acl.PermOperator, "", acl.ErrPermissionDenied},
		{acl.Principal{Kind: "cert", Role: "media", Server: "m1"}, acl.PermServer, "m1", nil},
		{acl.Principal{Kind: "cert", Role: "media", Server: "m1"}, acl.PermServer, "m2", acl.ErrPermissionDenied},
		{acl.Principal{Kind: "cert", Role: acl.RoleAgent}, acl.PermOperator, "", nil},
		{acl.Principal{Kind: "token", Role: "operator"}, acl.PermOperator, "", nil},
		{acl.Principal{Kind: "token", Role: "bogus"}, acl.PermRead, "", acl.ErrPermissionDenied},
	} {
		if err := acl.Authorize(tc.p, tc.perm, tc.server); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
			t.Errorf("%v %v %q: %v, want %v", tc.p, tc.perm, tc.server, err, tc.want)
		}
	}
}

// FuzzParseBearer: no header value panics the parser, and anything it
// accepts is a bounded, printable secret.
func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"", "Bearer sy_abc", "bearer x", "Basic abc", "Bearer ", "Bearer a b", "Bearer \x00", strings.Repeat("B", 600)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		s, err := acl.ParseBearer(h)
		if err != nil {
			if !errors.Is(err, acl.ErrUnauthenticated) {
				t.Fatalf("%q: %v", h, err)
			}
			return
		}
		if h == "" {
			if s != "" {
				t.Fatal("secret from an empty header")
			}
			return
		}
		if s == "" || len(s) > acl.MaxSecretLen+1 || strings.ContainsAny(s, " \t\r\n") {
			t.Fatalf("%q accepted as %q", h, s)
		}
	})
}

// TestPrincipalStringEscapesNames: names taken from certificates and
// tokens reach logs and error messages through String; plain names stay
// as they are, anything that could break or forge a line is escaped.
func TestPrincipalStringEscapesNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    acl.Principal
		want string
	}{
		{"plain certificate", acl.Principal{Kind: "cert", ID: "m1", Role: "media"}, "certificate m1 (media)"},
		{"dotted name", acl.Principal{Kind: "cert", ID: "media-7.eu_west", Role: "agent"}, "certificate media-7.eu_west (agent)"},
		{"non-ASCII letters", acl.Principal{Kind: "cert", ID: "nœud-é", Role: "agent"}, "certificate nœud-é (agent)"},
		{"plain token", acl.Principal{Kind: "token", ID: "a1b2", Role: "reader", Description: "ci"}, `token a1b2 (reader, "ci")`},
		{"newline forging a log line", acl.Principal{Kind: "cert", ID: "m1\nlevel=INFO msg=\"login ok\"", Role: "media"},
			`certificate "m1\nlevel=INFO msg=\"login ok\"" (media)`},
		{"carriage return", acl.Principal{Kind: "cert", ID: "m1\r", Role: "media"}, `certificate "m1\r" (media)`},
		{"terminal escape", acl.Principal{Kind: "cert", ID: "\x1b[2Jm1", Role: "media"}, `certificate "\x1b[2Jm1" (media)`},
		{"NUL", acl.Principal{Kind: "cert", ID: "m1\x00", Role: "media"}, `certificate "m1\x00" (media)`},
		{"right-to-left override", acl.Principal{Kind: "cert", ID: "m1\u202eevil", Role: "media"}, `certificate "m1\u202eevil" (media)`},
		{"invalid UTF-8", acl.Principal{Kind: "cert", ID: "m1\xff", Role: "media"}, `certificate "m1\xff" (media)`},
		{"space", acl.Principal{Kind: "cert", ID: "m1 (agent)", Role: "media"}, `certificate "m1 (agent)" (media)`},
		{"looks escaped", acl.Principal{Kind: "cert", ID: `"m1\n"`, Role: "media"}, `certificate "\"m1\\n\"" (media)`},
		{"empty name", acl.Principal{Kind: "cert", ID: "", Role: "agent"}, `certificate "" (agent)`},
		{"role escaped too", acl.Principal{Kind: "cert", ID: "m1", Role: "media\nx"}, `certificate m1 ("media\nx")`},
		{"token id and description", acl.Principal{Kind: "token", ID: "t\n1", Role: "reader", Description: "a\nb"}, `token "t\n1" (reader, "a\nb")`},
		{"anonymous", acl.Anonymous, "anonymous"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.p.String()
			if got != tc.want {
				t.Fatalf("String() = %s, want %s", got, tc.want)
			}
			if strings.ContainsAny(got, "\n\r\x00\x1b\u202e") {
				t.Fatalf("String() = %q keeps a control character", got)
			}
		})
	}
}
