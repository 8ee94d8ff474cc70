package httpapi

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
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
