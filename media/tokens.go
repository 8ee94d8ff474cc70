package media

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/switchyard/switchyard/mediatoken"
)

// authorize checks a WHIP/WHEP request's bearer token (or, for redirected
// viewers, its access_token query value) when the node has a keyring
// (Config.Tokens). It returns the token's claims, or answers 401/403 itself
// and returns false. Without a keyring every request passes.
func (n *Node) authorize(w http.ResponseWriter, r *http.Request, action string) (mediatoken.Claims, bool) {
	if n.cfg.Tokens == nil {
		return mediatoken.Claims{}, true
	}
	tok := mediatoken.FromRequest(r.Header.Get("Authorization"), r.URL.Query().Get("access_token"))
	c, err := n.cfg.Tokens.Check(tok, r.PathValue("room"), action, time.Now())
	if errors.Is(err, mediatoken.ErrUnknownKey) && n.cfg.RefreshTokens != nil {
		// A key rotated in since the keyring was loaded: load it and look
		// again, rather than refuse until the next periodic refresh.
		if rerr := n.cfg.RefreshTokens(r.Context()); rerr == nil {
			c, err = n.cfg.Tokens.Check(tok, r.PathValue("room"), action, time.Now())
		}
	}
	if err != nil {
		code := http.StatusUnauthorized
		if errors.Is(err, mediatoken.ErrScope) {
			code = http.StatusForbidden
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard-media"`)
		}
		http.Error(w, err.Error(), code)
		return c, false
	}
	return c, true
}

// mint signs a token with the node's newest key ("" without a keyring).
func (n *Node) mint(room, action, alloc string, ttl time.Duration) string {
	if n.cfg.Tokens == nil {
		return ""
	}
	k, ok := n.cfg.Tokens.Signer()
	if !ok {
		return ""
	}
	now := time.Now()
	tok, err := mediatoken.Mint(k, mediatoken.Claims{Room: room, Action: action, Alloc: alloc, ExpiresAt: now.Add(ttl).Unix(), IssuedAt: now.Unix()})
	if err != nil {
		return ""
	}
	return tok
}

// withAccessToken adds a play token for room to a redirect URL.
func (n *Node) withAccessToken(u, room string) string {
	tok := n.mint(room, mediatoken.Play, "", time.Minute)
	if tok == "" {
		return u
	}
	return u + "?access_token=" + url.QueryEscape(tok)
}
