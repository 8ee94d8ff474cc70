package mediatoken_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/mediatoken"
)

var (
	k1 = mediatoken.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	k2 = mediatoken.Key{ID: "k2", Secret: []byte("fedcba9876543210fedcba9876543210")}
)

func mint(t *testing.T, k mediatoken.Key, room, act string, exp time.Time) string {
	t.Helper()
	tok, err := mediatoken.Mint(k, mediatoken.Claims{Room: room, Action: act, ExpiresAt: exp.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestCheckScopesExpiryAndRotation(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	kr := &mediatoken.Keyring{}
	kr.Set([]mediatoken.Key{k1})
	good := mint(t, k1, "demo", mediatoken.Publish, now.Add(time.Minute))
	if c, err := kr.Check(good, "demo", mediatoken.Publish, now); err != nil || c.Room != "demo" {
		t.Fatalf("good token: %+v %v", c, err)
	}
	for name, tc := range map[string]struct {
		tok, room, act string
		at             time.Time
		want           error
	}{
		"missing":      {"", "demo", mediatoken.Publish, now, mediatoken.ErrMissing},
		"wrong room":   {good, "other", mediatoken.Publish, now, mediatoken.ErrScope},
		"wrong action": {good, "demo", mediatoken.Play, now, mediatoken.ErrScope},
		"expired":      {good, "demo", mediatoken.Publish, now.Add(time.Minute + mediatoken.Leeway), mediatoken.ErrInvalid},
		"unknown key":  {mint(t, k2, "demo", mediatoken.Publish, now.Add(time.Minute)), "demo", mediatoken.Publish, now, mediatoken.ErrInvalid},
		"tampered":     {strings.Replace(good, good[len(good)-5:], "AAAAA", 1), "demo", mediatoken.Publish, now, mediatoken.ErrInvalid},
		"garbage":      {"a.b.c", "demo", mediatoken.Publish, now, mediatoken.ErrInvalid},
	} {
		if _, err := kr.Check(tc.tok, tc.room, tc.act, tc.at); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// Within the leeway an expired token still passes (clock skew).
	if _, err := kr.Check(good, "demo", mediatoken.Publish, now.Add(time.Minute+mediatoken.Leeway-time.Second)); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	// Rotation: k2 signs, tokens of k1 keep working.
	kr.Set([]mediatoken.Key{k1, k2})
	if s, _ := kr.Signer(); s.ID != "k2" {
		t.Fatalf("signer %s", s.ID)
	}
	if _, err := kr.Check(good, "demo", mediatoken.Publish, now); err != nil {
		t.Fatalf("old key after rotation: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	kr := &mediatoken.Keyring{}
	kr.Set([]mediatoken.Key{k1})
	good, _ := mediatoken.Mint(k1, mediatoken.Claims{Room: "r", Action: "play", ExpiresAt: 2_000_000_000})
	for _, s := range []string{good, "", "a.b.c", "..", strings.Repeat("x", 5000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if _, err := kr.Verify(tok, time.Unix(1_000_000, 0)); err != nil {
			return
		}
		// Whatever is accepted carries the key's signature of exactly
		// the header and claims it presents.
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted a token of %d parts: %q", len(parts), tok)
		}
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		m := hmac.New(sha256.New, k1.Secret)
		m.Write([]byte(parts[0] + "." + parts[1]))
		if err != nil || !hmac.Equal(sig, m.Sum(nil)) {
			t.Fatalf("accepted a token the key did not sign: %q", tok)
		}
	})
}

func TestFromRequest(t *testing.T) {
	tests := []struct{ auth, query, want string }{
		{"Bearer abc", "", "abc"},
		{"bearer abc", "", "abc"},
		{"BEARER  abc ", "", "abc"},
		{"Basic abc", "q", "q"},
		{"", "q", "q"},
		{"Bearer", "q", "q"},
	}
	for _, tc := range tests {
		if got := mediatoken.FromRequest(tc.auth, tc.query); got != tc.want {
			t.Errorf("FromRequest(%q, %q) = %q, want %q", tc.auth, tc.query, got, tc.want)
		}
	}
}
