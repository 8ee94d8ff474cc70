package api

// MaxPageLimit caps ?limit= on list endpoints.
const MaxPageLimit = 10000

// Paging headers of list endpoints: the number of items matching the
// query (before paging), and the cursor of the next page (absent on the
// last page).
const (
	TotalCountHeader = "X-Total-Count"
	NextCursorHeader = "X-Next-Cursor"
)
