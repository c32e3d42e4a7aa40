package sidecar

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

func tooLarge(limit int64) *esError {
	return newESError(http.StatusRequestEntityTooLarge, typeTooLong,
		fmt.Sprintf("request body is larger than the sidecar's max_body_bytes (%d bytes)", limit))
}

// decodedBody returns the request body with its Content-Encoding undone and
// bounded to max bytes after decoding, so a gzip bomb costs at most max.
// decoded reports whether an encoding was removed (the upstream call must
// then drop Content-Encoding). The decoded bytes count against the
// request's reservation of the in-flight budget (budgeted).
func decodedBody(w http.ResponseWriter, r *http.Request, max int64) (body io.Reader, decoded bool, err error) {
	raw := http.MaxBytesReader(w, r.Body, max)
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	switch enc {
	case "", "identity":
		return budgeted(r, &limitReader{r: raw, n: max, limit: max}), false, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(raw)
		if err != nil {
			return nil, false, badEncoding(enc, err)
		}
		return budgeted(r, &limitReader{r: &decodeErrReader{zr, enc}, n: max, limit: max}), true, nil
	case "deflate":
		zr, err := zlib.NewReader(raw)
		if err != nil {
			return nil, false, badEncoding(enc, err)
		}
		return budgeted(r, &limitReader{r: &decodeErrReader{zr, enc}, n: max, limit: max}), true, nil
	}
	return nil, false, newESError(http.StatusUnsupportedMediaType, typeIllegalArg,
		fmt.Sprintf("unsupported Content-Encoding %q (gzip and deflate are)", enc))
}

func badEncoding(enc string, err error) *esError {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge(mbe.Limit)
	}
	return newESError(http.StatusBadRequest, typeIllegalArg, fmt.Sprintf("request body is not valid %s: %v", enc, err))
}

// decodeErrReader turns decompression errors into a 400 (a truncated or
// corrupt gzip stream is the client's fault) while keeping the size limit's error.
type decodeErrReader struct {
	r   io.Reader
	enc string
}

func (d *decodeErrReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		err = badEncoding(d.enc, err)
	}
	return n, err
}

// limitReader fails with 413 once more than limit bytes were read.
type limitReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return 0, tooLarge(l.limit)
	}
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		return n, tooLarge(l.limit)
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return n, tooLarge(mbe.Limit)
	}
	return n, err
}

// readAllBody reads a whole (decoded, bounded) body: single documents and
// search bodies are small and must be complete before they can be rewritten.
func readAllBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, bool, error) {
	body, decoded, err := decodedBody(w, r, max)
	if err != nil {
		return nil, false, err
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.ContentLength <= max && !decoded {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(body); err != nil {
		return nil, false, err
	}
	return buf.Bytes(), decoded, nil
}

// lineReader reads NDJSON lines of any length. A returned line ends in '\n'
// unless it is the last line of the body, and is valid only until the next
// call: callers copy what they keep, so a line is copied once, into its
// final place.
type lineReader struct {
	br      *bufio.Reader
	scratch []byte
	line    int
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next line, or io.EOF after the last one.
func (l *lineReader) next() ([]byte, error) {
	line, err := l.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		l.scratch = append(l.scratch[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = l.br.ReadSlice('\n')
			l.scratch = append(l.scratch, line...)
		}
		line = l.scratch
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	if len(line) == 0 {
		return nil, io.EOF
	}
	l.line++
	return line, nil
}

func isBlank(b []byte) bool {
	return len(bytes.TrimSpace(b)) == 0
}
