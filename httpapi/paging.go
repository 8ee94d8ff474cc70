package httpapi

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// page cuts one page out of items, which are sorted by key: the items
// after ?after= (a key, exclusive), at most ?limit= of them (all when
// limit is absent). It sets the paging headers on w. A limit outside 1 to
// MaxPageLimit is refused with ErrInvalid before anything is written.
func page[T any](w http.ResponseWriter, r *http.Request, items []T, key func(T) string) ([]T, error) {
	q := r.URL.Query()
	limit := len(items)
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > api.MaxPageLimit {
			return nil, fmt.Errorf("%w: limit must be an integer from 1 to %d, got %q", fsm.ErrInvalid, api.MaxPageLimit, v)
		}
		limit = n
	}
	total := len(items)
	if after := q.Get("after"); after != "" {
		items = items[sort.Search(len(items), func(i int) bool { return key(items[i]) > after }):]
	}
	w.Header().Set(api.TotalCountHeader, strconv.Itoa(total))
	if len(items) > limit {
		items = items[:limit]
		w.Header().Set(api.NextCursorHeader, key(items[limit-1]))
	}
	return items, nil
}

// serverStates returns the server states a ?state= filter may name, by
// their API names ("active", ...), in the order of the enum.
func serverStates() ([]string, map[string]fsmpb.ServerState) {
	vals := make([]int32, 0, len(fsmpb.ServerState_name))
	for v := range fsmpb.ServerState_name {
		if v != int32(fsmpb.ServerState_SERVER_STATE_UNSPECIFIED) {
			vals = append(vals, v)
		}
	}
	slices.Sort(vals)
	names := make([]string, 0, len(vals))
	byName := make(map[string]fsmpb.ServerState, len(vals))
	for _, v := range vals {
		st := fsmpb.ServerState(v)
		names = append(names, fsm.StateName(st))
		byName[fsm.StateName(st)] = st
	}
	return names, byName
}

// serverStateFilter reads the values of ?state= (each a state name or a
// comma-separated list of them; repeating the parameter adds to the
// list) and returns the set of states to keep, or nil when no state is
// named (keep every server; an empty ?state= names none). An unknown name is refused with ErrInvalid,
// naming the accepted ones.
func serverStateFilter(values []string) (map[fsmpb.ServerState]bool, error) {
	if len(values) == 0 {
		return nil, nil
	}
	names, byName := serverStates()
	keep := map[fsmpb.ServerState]bool{}
	for _, v := range values {
		if v == "" {
			continue // ?state= alone names nothing: no filter
		}
		for _, name := range strings.Split(v, ",") {
			st, ok := byName[strings.TrimSpace(name)]
			if !ok {
				if len(name) > 64 {
					name = name[:64] + "..." // quoted below: a cut character is escaped
				}
				return nil, fmt.Errorf("%w: state: unknown server state %q (accepted: %s; several may be given, comma-separated)", fsm.ErrInvalid, name, strings.Join(names, ", "))
			}
			keep[st] = true
		}
	}
	if len(keep) == 0 {
		return nil, nil
	}
	return keep, nil
}
