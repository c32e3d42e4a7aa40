package gateway

import (
	"io"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tusou/tusou/admission"
	"github.com/tusou/tusou/apierr"
)

const ctxArenaKey = "tusou.arena"

// memoryBudget charges each request's body to the process-wide budget
// before a byte of it is read: the declared Content-Length at once (a body
// that cannot fit gets 429 unread), a chunked body as it arrives. The bytes
// are released when the handler returns, when its buffers are garbage.
func memoryBudget(b *admission.Budget) gin.HandlerFunc {
	return func(c *gin.Context) {
		a := &bodyArena{declared: c.Request.ContentLength}
		if b != nil {
			lease, err := b.Reserve("request_body", max(c.Request.ContentLength, 0))
			if err != nil {
				abortWithError(c, err)
				return
			}
			defer lease.Release()
			a.lease = lease
		}
		c.Set(ctxArenaKey, a)
		// gin pools its contexts with their keys: without this the pooled
		// context would keep the request's bytes alive after the response.
		defer func() { a.buf = nil }()
		c.Next()
	}
}

// bodyArena holds a request's body bytes (image files, fields) in as few
// allocations as possible, each charged to the budget before it is made.
// With a declared Content-Length one allocation of that size holds every
// part, since the parts of a body cannot add up to more than the body; the
// budget then accounts for exactly what the request allocates, where a
// bytes.Buffer would double its capacity (and leave the smaller copies as
// garbage) while reading an upload of unknown size.
type bodyArena struct {
	lease     *admission.Lease // nil: no budget
	declared  int64            // Content-Length, -1 if unknown
	buf       []byte
	allocated int64
}

// arenaOf returns the request's arena (memoryBudget made it).
func arenaOf(c *gin.Context) *bodyArena {
	if v, ok := c.Get(ctxArenaKey); ok {
		return v.(*bodyArena)
	}
	return &bodyArena{declared: -1} // a route outside /v1: nothing to charge
}

// arenaChunk is the first allocation for a body of unknown length.
const arenaChunk = 256 << 10

// read reads all of r into the arena, refusing more than max bytes, and
// returns the bytes (valid for the rest of the request). what names the
// thing being read in the error.
func (a *bodyArena) read(r io.Reader, max int64, what, code string) ([]byte, error) {
	start := len(a.buf)
	for {
		if len(a.buf) == cap(a.buf) {
			// Full: look ahead one byte before growing, so a body that fits
			// its declared length exactly ends without another allocation.
			var probe [1]byte
			n, err := io.ReadFull(r, probe[:])
			if n == 0 {
				if err == io.EOF {
					break
				}
				return nil, bodyReadError(err)
			}
			if err := a.grow(start, max); err != nil {
				return nil, err
			}
			start = 0
			a.buf = append(a.buf, probe[0])
		}
		n, err := r.Read(a.buf[len(a.buf):cap(a.buf)])
		a.buf = a.buf[:len(a.buf)+n]
		if int64(len(a.buf)-start) > max {
			return nil, apierr.New(apierr.TooLarge, code, "%s is larger than the limit of %d bytes", what, max)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, bodyReadError(err)
		}
	}
	return a.buf[start:len(a.buf):len(a.buf)], nil
}

// grow moves the part being read (a.buf[start:]) into a new allocation that
// has room for more, charging it first. Earlier parts stay where they are.
func (a *bodyArena) grow(start int, max int64) error {
	part := len(a.buf) - start
	size := int64(arenaChunk)
	switch {
	case a.allocated == 0 && a.declared > 0:
		size = a.declared // already reserved: the whole body fits
	case part > 0:
		size = 2 * int64(part)
	}
	size = min(size, max+1) // one more than the limit is enough to see it is exceeded
	size = max64(size, int64(part)+1)
	if a.lease != nil {
		if err := a.lease.Cover(a.allocated + size); err != nil {
			return err
		}
	}
	a.allocated += size
	nb := make([]byte, part, size)
	copy(nb, a.buf[start:])
	a.buf = nb
	return nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Bounds on draining an unread request body after an error response.
const (
	drainMaxBytes = 128 << 20
	drainMaxTime  = 10 * time.Second
)

// drainAfterError reads and discards what is left of a request body after
// an error response (413 and 429 are answered before the body is read), so
// that clients that send the whole body before reading the response
// (Python's urllib and requests, many others) get the JSON error instead of
// a connection reset. It is bounded in bytes and time; past that the
// connection is closed as before. body is the request's own body, under any
// limiting reader.
func drainAfterError(c *gin.Context, body io.Reader) {
	if c.Writer.Status() < 400 {
		return
	}
	rc := http.NewResponseController(c.Writer)
	_ = rc.Flush() // the client may read the answer while it sends
	_ = rc.SetReadDeadline(time.Now().Add(drainMaxTime))
	_, _ = io.CopyN(io.Discard, body, drainMaxBytes)
}
