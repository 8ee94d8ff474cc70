package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
)

// pageFlags are the paging flags of the list commands. Lists are always
// read a page at a time (--page-size items per request), so that no answer
// is one large body; --limit and --after choose what is printed.
type pageFlags struct {
	limit    int
	after    string
	pageSize int
}

func (f *pageFlags) register(cmd *cobra.Command, noun, key string) {
	cmd.Flags().IntVar(&f.limit, "limit", 0, "print at most this many "+noun+" (0: all); the last line (stderr with --json) tells the --after that continues")
	cmd.Flags().StringVar(&f.after, "after", "", "start after this "+key+" (exclusive; "+noun+" are ordered by "+key+")")
	cmd.Flags().IntVar(&f.pageSize, "page-size", api.DefaultPageSize, fmt.Sprintf("%s read per request (1 to %d)", noun, api.MaxPageLimit))
}

// check refuses flag values no listing can use.
func (f *pageFlags) check(cmd *cobra.Command) error {
	if f.limit < 0 {
		return usagef(cmd, "--limit must not be negative, got %d", f.limit)
	}
	if f.pageSize < 1 || f.pageSize > api.MaxPageLimit {
		return usagef(cmd, "--page-size must be from 1 to %d, got %d", api.MaxPageLimit, f.pageSize)
	}
	return nil
}

// partial reports whether the listing may print only part of the list.
func (f *pageFlags) partial() bool { return f.limit > 0 || f.after != "" }

// listResult is what a paged listing read: how many items it handed on,
// the list's total as of its last page, and the cursor after the last
// item handed on ("" when nothing follows it).
type listResult struct {
	n, total int
	next     string
}

// listPages reads the list page after page from --after on and hands each
// item to each, stopping after --limit items. Items on a page past the
// limit are not handed on; the cursor then points after the last one that
// was.
func listPages[T any](ctx context.Context, f *pageFlags, key func(T) string, page func(context.Context, api.PageOptions) (api.Page[T], error), each func(T) error) (listResult, error) {
	var res listResult
	// The last page asks for no more than the limit leaves.
	clamped := func(ctx context.Context, p api.PageOptions) (api.Page[T], error) {
		if f.limit > 0 {
			p.Limit = min(p.Limit, f.limit-res.n)
		}
		return page(ctx, p)
	}
	for pg, err := range api.Pages(ctx, api.PageOptions{Limit: f.pageSize, After: f.after}, clamped) {
		if err != nil {
			return res, err
		}
		res.total, res.next = pg.Total, pg.NextCursor
		for i, it := range pg.Items {
			if f.limit > 0 && res.n == f.limit {
				// An agent that ignored the limit: stop here, and say
				// where the rest starts.
				res.next = key(pg.Items[i-1])
				return res, nil
			}
			if err := each(it); err != nil {
				return res, err
			}
			res.n++
		}
		if f.limit > 0 && res.n == f.limit {
			break
		}
	}
	return res, nil
}

// footer is the last line of a listing's table: how many were printed of
// how many, and how to go on when more follow.
func (r listResult) footer(noun string) string {
	switch {
	case r.next != "":
		return fmt.Sprintf("%d of %d %s shown; the next page: --after %s", r.n, r.total, noun, shellQuote(r.next))
	case r.n != r.total:
		return fmt.Sprintf("%d of %d %s shown; no more follow", r.n, r.total, noun)
	}
	return fmt.Sprintf("%d %s", r.n, noun)
}

// shellQuote quotes s for a shell when it holds anything but plain
// characters (ids and room names may hold spaces or quotes).
func shellQuote(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == ':' || r == '/' || r == '@') {
			q := []byte{'\''}
			for i := 0; i < len(s); i++ {
				if s[i] == '\'' {
					q = append(q, `'\''`...)
				} else {
					q = append(q, s[i])
				}
			}
			return esc(string(append(q, '\'')))
		}
	}
	return s
}

// jsonArray prints a JSON array one element at a time, formatted exactly
// as printJSON formats a whole slice: a listing of any length is printed
// as it is read, never held whole.
type jsonArray struct {
	w io.Writer
	n int
}

func (a *jsonArray) add(v any) error {
	b, err := json.MarshalIndent(v, "  ", "  ")
	if err != nil {
		return err
	}
	sep := ",\n  "
	if a.n == 0 {
		sep = "[\n  "
	}
	a.n++
	if _, err := io.WriteString(a.w, sep); err != nil {
		return err
	}
	_, err = a.w.Write(b)
	return err
}

// close ends the array ("[]" when it is empty).
func (a *jsonArray) close() error {
	end := "\n]\n"
	if a.n == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(a.w, end)
	return err
}

// printTablePages prints a paged listing as a table (header, then one
// tab-separated row per item) followed by its footer (the total, and the
// --after that continues a partial listing).
func printTablePages[T any](cmd *cobra.Command, ctx context.Context, f *pageFlags, noun, header string, key func(T) string, page func(context.Context, api.PageOptions) (api.Page[T], error), row func(T) string) error {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	res, err := listPages(ctx, f, key, page, func(v T) error {
		_, err := fmt.Fprintln(w, row(v))
		return err
	})
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), res.footer(noun))
	return nil
}

// printJSONPages prints a paged listing as one JSON array on stdout; when
// the listing stopped before the end of the list, it says on stderr how
// many of how many it printed and the --after that continues.
func printJSONPages[T any](cmd *cobra.Command, ctx context.Context, f *pageFlags, noun string, key func(T) string, page func(context.Context, api.PageOptions) (api.Page[T], error)) error {
	arr := &jsonArray{w: cmd.OutOrStdout()}
	res, err := listPages(ctx, f, key, page, func(v T) error { return arr.add(v) })
	if err != nil {
		return err
	}
	if err := arr.close(); err != nil {
		return err
	}
	if res.next != "" {
		fmt.Fprintln(cmd.ErrOrStderr(), res.footer(noun))
	}
	return nil
}
