package sidecar

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"sync"

	"go.uber.org/zap"
)

// Budget admits bytes held in memory. The sidecar keeps its own
// (sidecar.max_inflight_bytes); a process-wide budget shared with the REST
// API is added with UseBudget. Implementations are safe for concurrent use.
type Budget interface {
	// TryAcquire reserves n bytes, or reports false (reserving nothing)
	// when that would go over the budget. It never waits: a request over
	// budget is answered 429 at once rather than holding a connection.
	TryAcquire(n int64) bool
	// Release returns n bytes reserved earlier.
	Release(n int64)
}

// UseBudget adds a process-wide budget: request bodies then need room in
// both. Call it before serving.
func (s *Sidecar) UseBudget(b Budget) { s.budgets = append(s.budgets, b) }

// reservation is what one request holds of the budgets. Bodies are
// reserved as they are read (decoded bytes, so a gzip body counts what it
// costs), in chunks, and released when the request ends.
type reservation struct {
	budgets []Budget
	held    int64
}

// reserveChunk is the reservation granularity: one budget operation per
// 256 KiB read instead of one per Read call.
const reserveChunk = 256 << 10

// grow reserves n more bytes in every budget, or none of them.
func (rv *reservation) grow(n int64) bool {
	for i, b := range rv.budgets {
		if !b.TryAcquire(n) {
			for _, g := range rv.budgets[:i] {
				g.Release(n)
			}
			return false
		}
	}
	rv.held += n
	return true
}

func (rv *reservation) release() {
	for _, b := range rv.budgets {
		b.Release(rv.held)
	}
	rv.held = 0
}

// overBudget is the 429 of a request whose body does not fit.
func overBudget() *esError {
	e := newESError(http.StatusTooManyRequests, typeOverloaded,
		"the sidecar holds as many request bytes as it may (sidecar.max_inflight_bytes, and the process-wide server.memory_budget_bytes); retry later")
	e.RetryAfter = 1
	return e
}

type reservationKey struct{}

// withReservation starts a request's reservation, taking its declared
// Content-Length (up to max) at once so a body that cannot fit is refused
// before it is read.
func (s *Sidecar) withReservation(r *http.Request, max int64) (*http.Request, *reservation, *esError) {
	rv := &reservation{budgets: s.budgets}
	if n := min(r.ContentLength, max); n > 0 && !rv.grow(n) {
		return r, rv, overBudget()
	}
	return r.WithContext(context.WithValue(r.Context(), reservationKey{}, rv)), rv, nil
}

// budgetReader reserves what it reads beyond what the reservation holds.
type budgetReader struct {
	r    io.Reader
	rv   *reservation
	read int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read += int64(n)
	if over := b.read - b.rv.held; over > 0 && !b.rv.grow(max(over, reserveChunk)) {
		return n, overBudget()
	}
	return n, err
}

// budgeted wraps a decoded body in the request's reservation, if any.
func budgeted(r *http.Request, body io.Reader) io.Reader {
	if rv, ok := r.Context().Value(reservationKey{}).(*reservation); ok && len(rv.budgets) > 0 {
		return &budgetReader{r: body, rv: rv}
	}
	return body
}

// tooManyBuilders is the 400 of a request with more query_vector_builders
// than sidecar.max_query_builders.
func tooManyBuilders(max int) *esError {
	return newESError(http.StatusBadRequest, typeIllegalArg, fmt.Sprintf(
		"the request has more than %d query_vector_builders (sidecar.max_query_builders)", max))
}

// msearchWorkers bounds the msearch bodies rewritten at once per request:
// each holds a decoded body, and their embeddings queue for the shared
// slots anyway, so more workers would add memory, not throughput.
const msearchWorkers = 8

// rewriteMsearchItems rewrites the bodies of an msearch's items with a
// small pool of workers (never a goroutine per item); each builder's
// embedding takes an embedding slot before its goroutine starts
// (computeBuilders). Inference admission (credentials) is settled first,
// for the whole request.
func (s *Sidecar) rewriteMsearchItems(ctx context.Context, items []*msearchItem) *esError {
	if len(items) == 0 {
		return nil
	}
	if err := admitted(ctx); err != nil {
		return err
	}
	next := make(chan *msearchItem)
	var wg sync.WaitGroup
	for range min(len(items), msearchWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range next {
				s.rewriteMsearchItem(ctx, it)
			}
		}()
	}
	for _, it := range items {
		next <- it
	}
	close(next)
	wg.Wait()
	return nil
}

func (s *Sidecar) rewriteMsearchItem(ctx context.Context, it *msearchItem) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("sidecar: panic rewriting an msearch body", zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
			it.err = newESError(http.StatusInternalServerError, typeInternal, "internal error")
		}
	}()
	out, _, err := s.rewriteSearch(ctx, it.body)
	if err != nil {
		it.err = toESError(err, KindImage)
		return
	}
	it.out = out
}
