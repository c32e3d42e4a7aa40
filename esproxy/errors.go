package esproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/internal/tlsutil"
)

// Error codes this package puts on *apierr.Error. They are stable: the
// gateway and clients may switch on them.
const (
	CodeUnavailable      = "es_unavailable"
	CodeTimeout          = "es_timeout"
	CodeCanceled         = "es_canceled"
	CodeOverloaded       = "es_overloaded"
	CodeBadGateway       = "es_error"
	CodeIndexNotFound    = "es_index_not_found"
	CodeDocNotFound      = "document_not_found"
	CodeRejected         = "es_rejected"
	CodeConflict         = "es_conflict"
	CodeTooLarge         = "es_request_too_large"
	CodeIndexMismatch    = "es_index_mismatch"
	CodeInvalidDoc       = "invalid_document"
	CodeInvalidQuery     = "invalid_query"
	CodeNotInitialised   = "es_not_initialised"
	CodeNotElasticsearch = "es_not_elasticsearch"
	// CodeCredentials is Elasticsearch refusing the gateway's own
	// credentials (401/403): a configuration error waiting does not fix.
	CodeCredentials = "es_credentials"
	// CodeTLS is an HTTPS certificate the gateway cannot verify (wrong or
	// missing elasticsearch.ca_cert, a name or IP the certificate lacks).
	CodeTLS = "es_tls"
)

// Retry hints. A node restart takes several seconds, so a client told to come
// back in 5s has a fair chance; a 429 is a momentary queue overflow.
const (
	unavailableRetryAfter = 5 * time.Second
	overloadedRetryAfter  = 1 * time.Second
)

// maxReason caps how much of an Elasticsearch error reason reaches a message:
// reasons may quote field values (a whole vector, in the worst case).
const maxReason = 300

// transportError classifies a failure to get any HTTP answer. ctx is the
// context the request ran under, so its Err tells a caller's cancel from our
// deadline.
func transportError(ctx context.Context, op string, err error) *apierr.Error {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return apierr.Wrap(err, apierr.Canceled, CodeCanceled, "elasticsearch %s canceled", op)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()):
		return apierr.Wrap(err, apierr.Timeout, CodeTimeout, "elasticsearch did not answer %s in time", op)
	case tlsutil.IsCertError(err):
		return apierr.Wrap(err, apierr.BadGateway, CodeTLS,
			"elasticsearch's TLS certificate could not be verified (%s): set elasticsearch.ca_cert to the PEM of the CA that signed it, and address the node by a name or IP its certificate lists", op)
	case strings.Contains(err.Error(), "not Elasticsearch"):
		// go-elasticsearch's product check: the address answers, but it is
		// not Elasticsearch (a proxy page, another service on the port).
		return apierr.Wrap(err, apierr.BadGateway, CodeNotElasticsearch,
			"the configured Elasticsearch address answered %s but is not Elasticsearch", op)
	}
	return apierr.Wrap(err, apierr.Unavailable, CodeUnavailable,
		"elasticsearch is unreachable (%s)", op).WithRetryAfter(unavailableRetryAfter)
}

// esErrorBody is Elasticsearch's error envelope. "error" is an object for
// most APIs but a plain string for a few (e.g. GET _alias on a missing alias).
type esErrorBody struct {
	Error  json.RawMessage `json:"error"`
	Status int             `json:"status"`
}

type esErrorCause struct {
	Type      string `json:"type"`
	Reason    string `json:"reason"`
	RootCause []struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	} `json:"root_cause"`
}

// parseESError extracts (type, reason) from an error body; both may be empty.
func parseESError(body []byte) (typ, reason string) {
	var env esErrorBody
	if json.Unmarshal(body, &env) != nil || len(env.Error) == 0 {
		return "", ""
	}
	if env.Error[0] == '"' {
		_ = json.Unmarshal(env.Error, &reason)
		return "", truncate(reason)
	}
	var c esErrorCause
	_ = json.Unmarshal(env.Error, &c)
	typ, reason = c.Type, c.Reason
	// The top-level cause of a search failure is a generic
	// search_phase_execution_exception; the root cause says what happened.
	if len(c.RootCause) > 0 && (typ == "search_phase_execution_exception" || reason == "") {
		typ, reason = c.RootCause[0].Type, c.RootCause[0].Reason
	}
	return typ, truncate(reason)
}

func truncate(s string) string {
	if len(s) <= maxReason {
		return s
	}
	// Cut on a rune boundary.
	cut := maxReason
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}

// statusError classifies a non-2xx answer. body may be nil.
func statusError(op string, status int, header http.Header, body []byte) *apierr.Error {
	typ, reason := parseESError(body)
	return classifyStatus(op, status, header, typ, reason)
}

// classifyStatus maps an HTTP status and Elasticsearch error type/reason
// (from a response or a bulk item) to an *apierr.Error.
func classifyStatus(op string, status int, header http.Header, typ, reason string) *apierr.Error {
	reason = truncate(reason)
	detail := typ
	if reason != "" {
		detail = typ + ": " + reason
	}
	if detail == "" {
		detail = http.StatusText(status)
	}
	cause := fmt.Errorf("elasticsearch %s: HTTP %d: %s", op, status, detail)
	switch {
	case status == http.StatusTooManyRequests:
		return apierr.Wrap(cause, apierr.Overloaded, CodeOverloaded,
			"elasticsearch is overloaded (%s); retry later", op).WithRetryAfter(retryAfter(header, overloadedRetryAfter))
	case status == http.StatusNotFound && typ == "index_not_found_exception":
		return apierr.Wrap(cause, apierr.NotFound, CodeIndexNotFound, "elasticsearch index not found: %s", reason)
	case status == http.StatusNotFound:
		return apierr.Wrap(cause, apierr.NotFound, CodeDocNotFound, "not found")
	case status == http.StatusConflict:
		return apierr.Wrap(cause, apierr.Conflict, CodeConflict, "elasticsearch %s conflict: %s", op, detail)
	case status == http.StatusRequestEntityTooLarge:
		return apierr.Wrap(cause, apierr.TooLarge, CodeTooLarge, "request too large for elasticsearch (%s)", op)
	case status == http.StatusRequestTimeout || status == http.StatusGatewayTimeout:
		return apierr.Wrap(cause, apierr.Timeout, CodeTimeout, "elasticsearch did not answer %s in time", op)
	case status == http.StatusServiceUnavailable:
		return apierr.Wrap(cause, apierr.Unavailable, CodeUnavailable,
			"elasticsearch is unavailable (%s): %s", op, detail).WithRetryAfter(retryAfter(header, unavailableRetryAfter))
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		// Our credentials, not the client's: an operator problem.
		return apierr.Wrap(cause, apierr.BadGateway, CodeCredentials,
			"elasticsearch refused the gateway's credentials (%s): check elasticsearch.username/password or elasticsearch.api_key and the rights of that user or key", op)
	case status == http.StatusBadRequest:
		// We validate what we send, so a 400 is about the document's
		// content (e.g. metadata too deep, an immense term) or a mapping that
		// disagrees with us; the reason names the field, not secrets.
		return apierr.Wrap(cause, apierr.InvalidArgument, CodeRejected, "elasticsearch rejected the %s: %s", op, detail)
	}
	return apierr.Wrap(cause, apierr.BadGateway, CodeBadGateway, "elasticsearch %s failed with HTTP %d", op, status)
}

// retryAfter honours a Retry-After header in seconds, else def.
func retryAfter(h http.Header, def time.Duration) time.Duration {
	if h != nil {
		if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
			return time.Duration(s) * time.Second
		}
	}
	return def
}

// readBody reads at most limit bytes of an (error) body.
func readBody(r io.Reader, limit int64) []byte {
	var b bytes.Buffer
	_, _ = io.Copy(&b, io.LimitReader(r, limit))
	return b.Bytes()
}
