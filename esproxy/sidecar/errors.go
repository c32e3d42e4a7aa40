package sidecar

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/tusou/tusou/apierr"
)

// esError is an error in Elasticsearch's shape: a type (what clients switch
// on), a reason (for humans) and an HTTP status. The sidecar answers with
// these, never with the native API's error body, because its clients are
// Elasticsearch clients.
type esError struct {
	Status int
	Type   string
	Reason string
	// RetryAfter, when set, is sent as Retry-After (seconds).
	RetryAfter int
	// WWWAuthenticate are the challenges of a 401.
	WWWAuthenticate []string
}

// Error types the sidecar adds. Elasticsearch's own types are used where the
// condition is the same one Elasticsearch reports (a malformed bulk line is
// an illegal_argument_exception either way).
const (
	typeImage       = "tusou_image_exception"
	typeText        = "tusou_text_exception"
	typeOverloaded  = "tusou_rejected_execution_exception"
	typeUnavailable = "tusou_unavailable_exception"
	typeTimeout     = "tusou_timeout_exception"
	typeUpstream    = "tusou_upstream_exception"
	typeInternal    = "tusou_exception"
	typeTooLong     = "tusou_content_too_long_exception"
	typeSecurity    = "security_exception"
	typeIllegalArg  = "illegal_argument_exception"
	typeParsing     = "parsing_exception"
)

func (e *esError) Error() string { return e.Type + ": " + e.Reason }

func newESError(status int, typ, reason string) *esError {
	return &esError{Status: status, Type: typ, Reason: reason}
}

// inputType is the error type for a bad input of a rule or builder kind.
func inputType(kind string) string {
	if kind == KindText {
		return typeText
	}
	return typeImage
}

// toESError maps any error to Elasticsearch's shape. Input problems (a
// corrupt image, a refused URL) are 400 like Elasticsearch's own document
// errors, so bulk clients treat them as permanent; a full queue is 429 so
// they retry the item; dependencies failing are 5xx.
func toESError(err error, kind string) *esError {
	var ee *esError
	if errors.As(err, &ee) {
		return ee
	}
	ae := apierr.As(err)
	if ae == nil {
		return newESError(http.StatusInternalServerError, typeInternal, "internal error")
	}
	reason := "[" + ae.Code + "] " + ae.Message
	switch ae.Kind {
	case apierr.InvalidArgument, apierr.Unprocessable, apierr.TooLarge, apierr.UnsupportedMediaType, apierr.NotFound:
		return newESError(http.StatusBadRequest, inputType(kind), reason)
	case apierr.Overloaded:
		e := newESError(http.StatusTooManyRequests, typeOverloaded, reason)
		e.RetryAfter = retrySeconds(ae)
		return e
	case apierr.Unavailable:
		e := newESError(http.StatusServiceUnavailable, typeUnavailable, reason)
		e.RetryAfter = retrySeconds(ae)
		return e
	case apierr.Timeout:
		return newESError(http.StatusGatewayTimeout, typeTimeout, reason)
	case apierr.Canceled:
		// The client is gone; the status is for the access log.
		return newESError(499, typeTimeout, reason)
	case apierr.BadGateway:
		return newESError(http.StatusBadGateway, typeUpstream, reason)
	case apierr.Forbidden:
		return newESError(http.StatusForbidden, typeSecurity, reason)
	}
	return newESError(http.StatusInternalServerError, typeInternal, "["+ae.Code+"] internal error")
}

func retrySeconds(e *apierr.Error) int {
	s := int((e.RetryAfter + 999_999_999) / 1_000_000_000)
	if s < 1 {
		s = 1
	}
	return s
}

// appendErrorObject appends {"type":..,"reason":..} (the per-item form).
func (e *esError) appendObject(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendQuoted(b, e.Type)
	b = append(b, `,"reason":`...)
	b = appendQuoted(b, e.Reason)
	return append(b, '}')
}

// appendFull appends the request-level form: {"error":{"root_cause":[..],
// "type":..,"reason":..},"status":N}, which is also an msearch item.
func (e *esError) appendFull(b []byte) []byte {
	b = append(b, `{"error":{"root_cause":[`...)
	b = e.appendObject(b)
	b = append(b, `],"type":`...)
	b = appendQuoted(b, e.Type)
	b = append(b, `,"reason":`...)
	b = appendQuoted(b, e.Reason)
	b = append(b, `},"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	return append(b, '}')
}

// writeESError answers the whole request with e.
func writeESError(w http.ResponseWriter, r *http.Request, e *esError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	for _, v := range e.WWWAuthenticate {
		w.Header().Add("WWW-Authenticate", v)
	}
	status := e.Status
	if status == 499 {
		status = http.StatusBadRequest
	}
	writeJSON(w, r, status, e.appendFull(nil))
}

// writeJSON writes a body the sidecar made itself, with the headers
// Elasticsearch clients check: X-Elastic-Product (the Go and Python clients
// refuse 2xx answers without it) and the content type the client asked for.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	h := w.Header()
	h.Set("X-Elastic-Product", "Elasticsearch")
	h.Set("Content-Type", responseContentType(r))
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// responseContentType mirrors Elasticsearch: a client asking for the
// versioned media type (compatible-with=8) gets it back.
func responseContentType(r *http.Request) string {
	for _, h := range []string{r.Header.Get("Accept"), r.Header.Get("Content-Type")} {
		if strings.Contains(h, "vnd.elasticsearch+") {
			if i := strings.Index(h, "compatible-with="); i >= 0 {
				v := h[i+len("compatible-with="):]
				if j := strings.IndexAny(v, "; ,"); j >= 0 {
					v = v[:j]
				}
				return "application/vnd.elasticsearch+json;compatible-with=" + v
			}
		}
	}
	return "application/json"
}
