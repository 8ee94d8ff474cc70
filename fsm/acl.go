package fsm

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// ACL roles a token may carry (see package acl for what each may do).
const (
	RoleOperator  = "operator"
	RoleAllocator = "allocator"
	RoleReader    = "reader"
	RoleMedia     = "media"
)

// ValidRole reports whether r is one of the ACL roles.
func ValidRole(r string) bool {
	switch r {
	case RoleOperator, RoleAllocator, RoleReader, RoleMedia:
		return true
	}
	return false
}

// Limits of ACL token fields, checked in Apply (and before proposing).
const (
	MaxTokenIDLen          = 64
	MaxTokenDescriptionLen = 256
	tokenHashLen           = 64 // hex SHA-256
)

// aclState is the ACL part of the replicated state.
type aclState struct {
	bootstrapped bool
	tokens       map[string]*fsmpb.AclToken // id -> token
	byHash       map[string]string          // secret hash -> id
	mediaKeys    []*fsmpb.MediaKey          // oldest first, at most two
}

func (a *aclState) init() {
	if a.tokens == nil {
		a.tokens = map[string]*fsmpb.AclToken{}
		a.byHash = map[string]string{}
	}
}

// applyACL runs the ACL commands. handled is false for any other command.
func (s *state) applyACL(now int64, c *fsmpb.Command) (handled bool, err error) {
	s.acl.init()
	switch v := c.GetCmd().(type) {
	case *fsmpb.Command_AclBootstrap:
		if s.acl.bootstrapped {
			return true, errorf(ErrACLBootstrapped, "ACLs were bootstrapped already; use an operator token to create more")
		}
		t := v.AclBootstrap.GetToken()
		if t.GetRole() != RoleOperator {
			return true, errorf(ErrInvalid, "the bootstrap token must have role %s", RoleOperator)
		}
		if err := s.addToken(now, t); err != nil {
			return true, err
		}
		s.acl.bootstrapped = true
		return true, nil
	case *fsmpb.Command_AclCreateToken:
		return true, s.addToken(now, v.AclCreateToken)
	case *fsmpb.Command_AddMediaKey:
		k := v.AddMediaKey
		if k.GetId() == "" || len(k.GetId()) > MaxTokenIDLen || len(k.GetSecret()) < 16 || len(k.GetSecret()) > 256 {
			return true, errorf(ErrInvalid, "media key needs an id and a 16-256 byte secret")
		}
		for _, old := range s.acl.mediaKeys {
			if old.Id == k.GetId() {
				return true, errorf(ErrInvalid, "media key %q exists already", k.GetId())
			}
		}
		c := proto.Clone(k).(*fsmpb.MediaKey)
		c.CreatedAtUnixMs = now
		s.acl.mediaKeys = append(s.acl.mediaKeys, c)
		if len(s.acl.mediaKeys) > 2 {
			s.acl.mediaKeys = s.acl.mediaKeys[len(s.acl.mediaKeys)-2:]
		}
		return true, nil
	case *fsmpb.Command_AclRevokeToken:
		t, ok := s.acl.tokens[v.AclRevokeToken]
		if !ok {
			return true, errorf(ErrNotFound, "ACL token %q does not exist", v.AclRevokeToken)
		}
		delete(s.acl.byHash, t.SecretHash)
		delete(s.acl.tokens, t.Id)
		return true, nil
	}
	return false, nil
}

// TokenLeewayMs is how far past its expiry a token still authorizes a
// command in Apply (and a request on any node: acl.Leeway is the same),
// absorbing clock skew between the node that checked the request and the
// leader that stamped the entry.
const TokenLeewayMs = 5000

// checkCommandToken refuses a command whose authorizing token (id, empty
// for commands no token authorized) was revoked or has expired at now.
// It reads only the replicated state and the entry's time.
func (s *state) checkCommandToken(now int64, id string) error {
	if id == "" {
		return nil
	}
	t, ok := s.acl.tokens[id]
	if !ok {
		return errorf(ErrUnauthenticated, "ACL token %s was revoked before this request was committed; nothing was changed", id)
	}
	if exp := t.GetExpiresAtUnixMs(); exp > 0 && now-TokenLeewayMs >= exp {
		return errorf(ErrUnauthenticated, "ACL token %s expired before this request was committed; nothing was changed", id)
	}
	return nil
}

// ValidateToken checks a token's fields (the secret hash, not a secret).
func ValidateToken(t *fsmpb.AclToken) error {
	switch {
	case t == nil:
		return errorf(ErrInvalid, "token is required")
	case t.GetId() == "" || len(t.GetId()) > MaxTokenIDLen || !printableASCII(t.GetId()):
		return errorf(ErrInvalid, "token id must be 1-%d printable ASCII characters", MaxTokenIDLen)
	case len(t.GetSecretHash()) != tokenHashLen:
		return errorf(ErrInvalid, "token secret hash must be %d hex digits", tokenHashLen)
	case !ValidRole(t.GetRole()):
		return errorf(ErrInvalid, "role %q: want operator, allocator, reader or media", t.GetRole())
	case len(t.GetDescription()) > MaxTokenDescriptionLen:
		return errorf(ErrInvalid, "description longer than %d bytes", MaxTokenDescriptionLen)
	case t.GetExpiresAtUnixMs() < 0:
		return errorf(ErrInvalid, "expiry must not be negative")
	case t.GetServer() != "" && t.GetRole() != RoleMedia:
		return errorf(ErrInvalid, "only a media token is bound to a server; a %s token acts for no server", t.GetRole())
	}
	if t.GetServer() != "" {
		if err := CheckText("token server", t.GetServer(), MaxIDLen); err != nil {
			return err
		}
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func (s *state) addToken(now int64, in *fsmpb.AclToken) error {
	if err := ValidateToken(in); err != nil {
		return err
	}
	if _, ok := s.acl.tokens[in.GetId()]; ok {
		return errorf(ErrInvalid, "ACL token id %q exists already", in.GetId())
	}
	if _, ok := s.acl.byHash[in.GetSecretHash()]; ok {
		return errorf(ErrInvalid, "ACL token secret reused")
	}
	t := proto.Clone(in).(*fsmpb.AclToken)
	t.CreatedAtUnixMs = now
	s.acl.tokens[t.Id] = t
	s.acl.byHash[t.SecretHash] = t.Id
	return nil
}

func (s *state) exportACL(st *fsmpb.State) {
	st.AclBootstrapped = s.acl.bootstrapped
	st.AclTokens = nil
	for _, t := range s.acl.tokens {
		st.AclTokens = append(st.AclTokens, proto.Clone(t).(*fsmpb.AclToken))
	}
	slices.SortFunc(st.AclTokens, func(a, b *fsmpb.AclToken) int { return strings.Compare(a.Id, b.Id) })
	st.MediaKeys = nil
	for _, k := range s.acl.mediaKeys {
		st.MediaKeys = append(st.MediaKeys, proto.Clone(k).(*fsmpb.MediaKey))
	}
}

func (s *state) importACL(st *fsmpb.State) {
	s.acl = aclState{}
	s.acl.init()
	s.acl.bootstrapped = st.GetAclBootstrapped()
	for _, t := range st.GetAclTokens() {
		c := proto.Clone(t).(*fsmpb.AclToken)
		s.acl.tokens[c.Id] = c
		s.acl.byHash[c.SecretHash] = c.Id
	}
	for _, k := range st.GetMediaKeys() {
		s.acl.mediaKeys = append(s.acl.mediaKeys, proto.Clone(k).(*fsmpb.MediaKey))
	}
}

// MediaKeys returns copies of the media-token signing keys, oldest first.
func (f *FSM) MediaKeys() []*fsmpb.MediaKey {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*fsmpb.MediaKey, 0, len(f.s.acl.mediaKeys))
	for _, k := range f.s.acl.mediaKeys {
		out = append(out, proto.Clone(k).(*fsmpb.MediaKey))
	}
	return out
}

// ACLBootstrapped reports whether the first operator token exists.
func (f *FSM) ACLBootstrapped() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.acl.bootstrapped
}

// ACLTokenByHash returns a copy of the token whose secret hashes to hash.
func (f *FSM) ACLTokenByHash(hash string) (*fsmpb.AclToken, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	id, ok := f.s.acl.byHash[hash]
	if !ok {
		return nil, false
	}
	return proto.Clone(f.s.acl.tokens[id]).(*fsmpb.AclToken), true
}

// ACLToken returns a copy of the token with this id.
func (f *FSM) ACLToken(id string) (*fsmpb.AclToken, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t, ok := f.s.acl.tokens[id]
	if !ok {
		return nil, false
	}
	return proto.Clone(t).(*fsmpb.AclToken), true
}

// ACLTokens returns copies of every token, sorted by id.
func (f *FSM) ACLTokens() []*fsmpb.AclToken {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := &fsmpb.State{}
	f.s.exportACL(st)
	return st.AclTokens
}
