package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
)

// allocatorsHelp is the one description of --allocators, shared by media,
// sidecar and loadgen.
const allocatorsHelp = "comma-separated addresses of allocator agents, each its HTTP API address or its QUIC address " +
	"(told apart by asking; prefix http://, https:// or quic:// to say which)"

// allocatorEntries joins --allocators and --quic-allocators (the older
// spelling for QUIC addresses, taken as quic:// entries) into one list. When
// only --quic-allocators is given, the default --allocators stays an HTTP
// address, taken as given, as before --allocators took QUIC addresses too.
func allocatorEntries(cmd *cobra.Command, allocators, quicAllocators string) []string {
	entries := splitList(allocators)
	quic := splitList(quicAllocators)
	if len(quic) > 0 && !cmd.Flags().Changed("allocators") {
		entries = []string{"http://" + defaultAddr}
	}
	for _, q := range quic {
		entries = append(entries, "quic://"+strings.TrimPrefix(q, "quic://"))
	}
	return entries
}

// allocatorAddrs are the agents named by --allocators, by kind of address.
type allocatorAddrs struct {
	// HTTP are the named agents' HTTP API addresses: those given, and for
	// an agent named by its QUIC address the HTTP address the member table
	// lists for it (when an HTTP address answered to read it).
	HTTP []string
	// QUIC are the named agents' QUIC addresses: those given, and for an
	// agent named by its HTTP address the QUIC address it advertises.
	QUIC []string
	// OtherQUIC are the QUIC addresses of the cluster's other members, to
	// fail over to.
	OtherQUIC []string
}

// dialQUIC is the QUIC address list a media node or sidecar dials: the
// named agents first, the other members after them; or, when the older
// --quic-allocators is given, exactly those addresses, as before.
func (a allocatorAddrs) dialQUIC(quicAllocators string) []string {
	if q := splitList(quicAllocators); len(q) > 0 {
		for i := range q {
			q[i] = strings.TrimPrefix(q[i], "quic://")
		}
		return q
	}
	return append(append([]string{}, a.QUIC...), a.OtherQUIC...)
}

// resolveOpts say what a command needs from --allocators.
type resolveOpts struct {
	// QUIC is the client TLS config of a command that talks QUIC (nil: the
	// command talks HTTP only, so every entry must be an HTTP address).
	QUIC *tls.Config
	// Wait bounds how long entries that answer nothing yet (agents still
	// starting) are asked again; 0 means 30 s.
	Wait time.Duration
	// Probe bounds one probe of one entry; 0 means 2 s.
	Probe time.Duration
}

type addrKind int

const (
	kindUnknown addrKind = iota
	kindHTTP
	kindQUIC
)

// allocEntry is one --allocators entry while it is being classified.
type allocEntry struct {
	addr    string
	kind    addrKind
	agentID string // from GET /v1/status, when it answered
	httpErr error  // the last HTTP probe's failure
	quicErr error  // the last QUIC probe's failure
}

// resolveAllocators classifies each --allocators entry as an agent's HTTP
// API address or its QUIC address and maps it to both. An entry prefixed
// http:// or https:// is an HTTP address and one prefixed quic:// a QUIC
// address, taken as given. Any other entry is asked: one that answers the
// HTTP API (GET /v1/status, with the token and CA of $SWITCHYARD_TOKEN and
// $SWITCHYARD_CACERT; any HTTP answer counts, an ACL refusal included) is an
// HTTP address; one that completes a QUIC handshake with opts.QUIC is a
// QUIC address (a QUIC port is UDP, so the HTTP probe's TCP connect is
// refused at once, and a TCP port never completes a QUIC handshake). An
// entry that answers neither, such as an agent that is down, is found in
// the member table (read from any HTTP address that answered) by the
// address it advertises. Entries still unknown are asked again until
// opts.Wait has passed; then they are an error.
//
// With opts.QUIC nil an entry that is a QUIC address is an error. With it
// set, resolution also waits (up to opts.Wait) until every agent named by
// HTTP address advertises a QUIC address.
func resolveAllocators(ctx context.Context, list []string, opts resolveOpts) (allocatorAddrs, error) {
	if opts.Wait <= 0 {
		opts.Wait = 30 * time.Second
	}
	if opts.Probe <= 0 {
		opts.Probe = 2 * time.Second
	}
	var es []*allocEntry
	for _, raw := range list {
		e := &allocEntry{addr: raw}
		switch {
		case strings.HasPrefix(raw, "http://"):
			e.addr, e.kind = strings.TrimPrefix(raw, "http://"), kindHTTP
		case strings.HasPrefix(raw, "https://"):
			e.addr, e.kind = strings.TrimPrefix(raw, "https://"), kindHTTP
		case strings.HasPrefix(raw, "quic://"):
			e.addr, e.kind = strings.TrimPrefix(raw, "quic://"), kindQUIC
		}
		e.addr = strings.TrimSuffix(e.addr, "/")
		if err := checkAddr(e.addr); err != nil {
			return allocatorAddrs{}, fmt.Errorf("--allocators: %v", err)
		}
		es = append(es, e)
	}
	if len(es) == 0 {
		return allocatorAddrs{}, errors.New("--allocators is empty")
	}
	deadline := time.Now().Add(opts.Wait)
	var members []api.MemberStatus
	var membersErr error
	for {
		probeAll(ctx, es, opts)
		// The member table is needed to map between the two kinds of
		// address, and to place entries that answered nothing.
		var httpAddrs []string
		needMembers := opts.QUIC != nil
		for _, e := range es {
			if e.kind == kindHTTP {
				httpAddrs = append(httpAddrs, e.addr)
			} else {
				needMembers = true
			}
		}
		if len(httpAddrs) > 0 && needMembers {
			// With ACLs on, the member table needs a credential: a media
			// node's or sidecar's certificate over HTTPS does.
			cl := api.NewClient(httpAddrs...).PresentCertificate(opts.QUIC)
			mctx, cancel := context.WithTimeout(ctx, 2*opts.Probe)
			ms, err := cl.Members(mctx)
			cancel()
			if err == nil {
				members = ms
			} else {
				membersErr = err
			}
		}
		byMembers(es, members)
		for _, e := range es {
			if e.kind == kindQUIC && opts.QUIC == nil {
				return allocatorAddrs{}, noQUICError(e, members)
			}
		}
		out, done := collect(es, members, opts.QUIC != nil)
		if opts.QUIC == nil {
			out.QUIC, out.OtherQUIC = nil, nil
		}
		if done {
			return out, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err := unresolved(es, opts.QUIC != nil, membersErr); err != nil {
				return allocatorAddrs{}, err
			}
			if opts.QUIC != nil && len(out.QUIC) == 0 {
				return allocatorAddrs{}, fmt.Errorf("--allocators: no agent advertises a QUIC address (start the agents with --quic-addr and the --tls-* flags, or name their QUIC addresses)")
			}
			return out, nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// probeAll asks every unclassified entry, all at once: first the HTTP API,
// then (for a command that talks QUIC) a QUIC handshake.
func probeAll(ctx context.Context, es []*allocEntry, opts resolveOpts) {
	var wg sync.WaitGroup
	for _, e := range es {
		if e.kind != kindUnknown {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := api.NewClient(e.addr).PresentCertificate(opts.QUIC)
			cl.Retry = false
			pctx, cancel := context.WithTimeout(ctx, opts.Probe)
			st, err := cl.Status(pctx)
			cancel()
			var ae *api.APIError
			switch {
			case err == nil:
				e.kind, e.agentID = kindHTTP, st.ID
				return
			case errors.As(err, &ae):
				e.kind = kindHTTP // it answered HTTP, if only to refuse
				return
			}
			e.httpErr = err
			if opts.QUIC == nil {
				return
			}
			pctx, cancel = context.WithTimeout(ctx, opts.Probe)
			defer cancel()
			conn, err := quic.DialAddr(pctx, e.addr, opts.QUIC.Clone(), &quic.Config{HandshakeIdleTimeout: opts.Probe})
			if err != nil {
				e.quicErr = err
				return
			}
			_ = conn.CloseWithError(0, "address probe")
			e.kind = kindQUIC
		}()
	}
	wg.Wait()
}

// byMembers classifies the entries that answered nothing by the addresses
// the member table lists.
func byMembers(es []*allocEntry, members []api.MemberStatus) {
	for _, e := range es {
		if e.kind != kindUnknown {
			continue
		}
		for _, m := range members {
			switch e.addr {
			case m.HTTPAddr:
				e.kind = kindHTTP
			case m.QUICAddr:
				e.kind = kindQUIC
			}
		}
	}
}

// member finds the member an entry names.
func member(e *allocEntry, members []api.MemberStatus) (api.MemberStatus, bool) {
	for _, m := range members {
		if (e.agentID != "" && m.ID == e.agentID) || (e.kind == kindHTTP && m.HTTPAddr == e.addr) || (e.kind == kindQUIC && m.QUICAddr == e.addr) {
			return m, true
		}
	}
	return api.MemberStatus{}, false
}

// collect builds the answer from the entries classified so far; done when
// every entry is classified and, if QUIC is needed, there is a QUIC address
// and no agent named by HTTP address is listed without one yet.
func collect(es []*allocEntry, members []api.MemberStatus, needQUIC bool) (allocatorAddrs, bool) {
	var out allocatorAddrs
	done := true
	seenH, seenQ := map[string]bool{}, map[string]bool{}
	add := func(list *[]string, seen map[string]bool, a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			*list = append(*list, a)
		}
	}
	for _, e := range es {
		m, found := member(e, members)
		switch e.kind {
		case kindUnknown:
			done = false
		case kindHTTP:
			add(&out.HTTP, seenH, e.addr)
			add(&out.QUIC, seenQ, m.QUICAddr)
			if needQUIC && found && m.QUICAddr == "" {
				done = false // a starting agent has not recorded it yet
			}
		case kindQUIC:
			add(&out.QUIC, seenQ, e.addr)
			if found {
				add(&out.HTTP, seenH, m.HTTPAddr)
			}
		}
	}
	if needQUIC && len(out.QUIC) == 0 {
		done = false
	}
	for _, m := range members {
		if m.QUICAddr != "" && !seenQ[m.QUICAddr] {
			out.OtherQUIC = append(out.OtherQUIC, m.QUICAddr)
			seenQ[m.QUICAddr] = true
		}
	}
	return out, done
}

// unresolved explains the entries left unclassified when time is up.
func unresolved(es []*allocEntry, quicToo bool, membersErr error) error {
	var msgs []string
	for _, e := range es {
		if e.kind != kindUnknown {
			continue
		}
		if quicToo {
			msgs = append(msgs, fmt.Sprintf("%s answers neither the HTTP API (%v) nor QUIC (%v)", e.addr, e.httpErr, e.quicErr))
		} else {
			msgs = append(msgs, fmt.Sprintf("%s does not answer the HTTP API (%v)", e.addr, e.httpErr))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	err := "--allocators: " + strings.Join(msgs, "; ")
	if membersErr != nil {
		err += fmt.Sprintf("; the member table could not be read: %v", membersErr)
	}
	return errors.New(err)
}

// noQUICError explains a QUIC address given to a command that talks HTTP
// only (no --tls-* flags).
func noQUICError(e *allocEntry, members []api.MemberStatus) error {
	if m, ok := member(e, members); ok && m.HTTPAddr != "" {
		return fmt.Errorf("--allocators: %s is agent %s's QUIC address; without the --tls-* flags only HTTP is spoken: give its HTTP API address %s, or the TLS flags", e.addr, m.ID, m.HTTPAddr)
	}
	return fmt.Errorf("--allocators: %s is a QUIC address; without the --tls-* flags only HTTP is spoken: give the agents' HTTP API addresses, or the TLS flags", e.addr)
}
