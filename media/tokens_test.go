package media

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/mediatoken"
)

// TestWHIPWHEPTokens: with a keyring, WHIP/WHEP without a token, with a
// wrong-room or wrong-action token are refused (401/403) before the offer
// is even read, a valid token passes, and an unsigned allocation header is
// not believed.
func TestWHIPWHEPTokens(t *testing.T) {
	key := mediatoken.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	kr := &mediatoken.Keyring{}
	kr.Set([]mediatoken.Key{key})
	cfg := testConfig(t, "m1", 4)
	cfg.Tokens = kr
	n := startNode(t, cfg, &memCluster{})
	hc := httpClient()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok := func(room, act string) string {
		s, err := mediatoken.Mint(key, mediatoken.Claims{Room: room, Action: act, ExpiresAt: time.Now().Add(time.Minute).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	post := func(path, bearer, body string, hdr ...string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.BaseURL()+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/sdp")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, path, bearer string
		want               int
	}{
		{"WHIP without token", "/whip/demo", "", 401},
		{"WHIP garbage token", "/whip/demo", "a.b.c", 401},
		{"WHIP other room", "/whip/demo", tok("other", mediatoken.Publish), 403},
		{"WHIP play token", "/whip/demo", tok("demo", mediatoken.Play), 403},
		{"WHIP valid token, bad offer", "/whip/demo", tok("demo", mediatoken.Publish), 400},
		{"WHEP without token", "/whep/demo", "", 401},
		{"WHEP other room", "/whep/demo", tok("other", mediatoken.Play), 403},
		{"WHEP publish token", "/whep/demo", tok("demo", mediatoken.Publish), 403},
		{"WHEP valid token via query", "/whep/demo?access_token=" + tok("demo", mediatoken.Play), "", 400},
	} {
		if got := post(tc.path, tc.bearer, "v=0"); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	// A publisher with a valid token and a forged allocation header: the
	// header is ignored (only a signed allocation id is believed).
	pa := testAPI(t)
	pc, err := pa.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	offer, err := offerGathered(pc)
	if err != nil {
		t.Fatal(err)
	}
	if got := post("/whip/demo", tok("demo", mediatoken.Publish), offer, AllocationHeader, "forged-alloc"); got != http.StatusCreated {
		t.Fatalf("publish with a valid token: %d", got)
	}
	n.mu.Lock()
	rm := n.rooms["demo"]
	alloc := ""
	if rm != nil && rm.pub != nil {
		alloc = rm.pub.allocID
	}
	n.mu.Unlock()
	if rm == nil || alloc != "" {
		t.Fatalf("room %v, allocation %q: the unsigned header was believed", rm != nil, alloc)
	}
}

// TestCascadeWithTokens: both media nodes require tokens. The publisher and
// viewers carry theirs; the third viewer's redirect carries a play token for
// the target minted by the origin, and the origin's cascade WHIP carries a
// publish token with the allocation id, which the target reports as hosted.
func TestCascadeWithTokens(t *testing.T) {
	c := testcluster.New(t, 1)
	key := mediatoken.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	kr := &mediatoken.Keyring{}
	kr.Set([]mediatoken.Key{key})
	cfg1, cfg2 := testConfig(t, "m1", 2), testConfig(t, "m2", 10)
	cfg1.Tokens, cfg2.Tokens = kr, kr
	m1 := startNode(t, cfg1, httpCluster(t, c, "m1"))
	m2 := startNode(t, cfg2, httpCluster(t, c, "m2"))
	tok := func(act string) string {
		s, err := mediatoken.Mint(key, mediatoken.Claims{Room: "r1", Action: act, ExpiresAt: time.Now().Add(5 * time.Minute).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return "r1?access_token=" + url.QueryEscape(s)
	}
	pa := testAPI(t)
	pub := publish(t, pa, m1.BaseURL(), tok(mediatoken.Publish))
	defer pub.close(true)
	v1 := watchRoom(t, pa, m1.BaseURL(), tok(mediatoken.Play))
	v2 := watchRoom(t, pa, m1.BaseURL(), tok(mediatoken.Play))
	defer v1.close()
	defer v2.close()
	v3 := watchRoom(t, pa, m1.BaseURL(), tok(mediatoken.Play))
	defer v3.close()
	if !strings.HasPrefix(v3.url, m2.BaseURL()+"/whep/r1") {
		t.Fatalf("third viewer answered by %s, want a redirect to %s", v3.url, m2.BaseURL())
	}
	v3.waitRTP(t, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	allocs, err := c.Client().Allocations(ctx, api.AllocationListOptions{Room: "r1", ActiveOnly: true})
	if err != nil || len(allocs) != 1 {
		t.Fatalf("allocations %+v %v", allocs, err)
	}
	eventually(t, 10*time.Second, func() error {
		if l := m2.currentLoad(); len(l.Allocs) != 1 || l.Allocs[0] != allocs[0].ID {
			return fmt.Errorf("m2 load lists allocations %v, want [%s] (signed by the origin)", l.Allocs, allocs[0].ID)
		}
		return nil
	})
}

// TestTokenOfARotatedKey: a token signed with a key the node's keyring does
// not hold yet (rotated in since its last load) passes once the node has
// reloaded its keys, without waiting for the periodic refresh; a token
// naming a key that does not exist stays refused.
func TestTokenOfARotatedKey(t *testing.T) {
	k1 := mediatoken.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	k2 := mediatoken.Key{ID: "k2", Secret: []byte("fedcba9876543210fedcba9876543210")}
	for _, tc := range []struct {
		name      string
		refresh   bool
		key       mediatoken.Key
		want      int // 400: the token passed, the offer did not
		refreshes int
	}{
		{"rotated key, reloaded", true, k2, 400, 1},
		{"rotated key, no reload", false, k2, 401, 0},
		{"key that does not exist", true, mediatoken.Key{ID: "k9", Secret: k2.Secret}, 401, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr := &mediatoken.Keyring{}
			kr.Set([]mediatoken.Key{k1})
			cfg := testConfig(t, "m1", 4)
			cfg.Tokens = kr
			var refreshes atomic.Int32
			if tc.refresh {
				cfg.RefreshTokens = func(context.Context) error {
					refreshes.Add(1)
					kr.Set([]mediatoken.Key{k2, k1}) // what the cluster holds now
					return nil
				}
			}
			n := startNode(t, cfg, &memCluster{})
			tok, err := mediatoken.Mint(tc.key, mediatoken.Claims{Room: "demo", Action: mediatoken.Publish, ExpiresAt: time.Now().Add(time.Minute).Unix()})
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodPost, n.BaseURL()+"/whip/demo", strings.NewReader("v=0"))
			req.Header.Set("Content-Type", "application/sdp")
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := httpClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want || int(refreshes.Load()) != tc.refreshes {
				t.Fatalf("status %d after %d reloads, want %d after %d", resp.StatusCode, refreshes.Load(), tc.want, tc.refreshes)
			}
		})
	}
}
