package client

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrorDetail is the gateway's error object: a stable code and a message
// naming the problem.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// APIError is a non-2xx answer from the gateway.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	ErrorDetail
	// RetryAfter is the server's Retry-After, zero when absent.
	RetryAfter time.Duration
	// Items are the per-file results an ingest answer carries even when every
	// file failed (then the status is the first file's error).
	Items []IngestItem
	// Attempts is how many times the call was tried.
	Attempts int
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("gateway answered %d %s: %s", e.Status, e.Code, e.Message)
	if e.Attempts > 1 {
		s += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	return s
}

// TransportError is a call that never got an answer (connection refused or
// reset, timeout), after every retry.
type TransportError struct {
	Method, URL string
	Attempts    int
	Err         error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("%s %s: no answer after %d attempt(s): %v", e.Method, e.URL, e.Attempts, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// parseAPIError reads the gateway's JSON error, or makes one up from the
// status when something else (a proxy, a load balancer) answered.
func parseAPIError(status int, h http.Header, body []byte) *APIError {
	e := &APIError{Status: status, RetryAfter: parseRetryAfter(h.Get("Retry-After"), time.Now())}
	var b struct {
		Error *ErrorDetail `json:"error"`
		Items []IngestItem `json:"items"`
	}
	if json.Unmarshal(body, &b) == nil && b.Error != nil && b.Error.Code != "" {
		e.ErrorDetail, e.Items = *b.Error, b.Items
		return e
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	e.Code, e.Message = "http_"+strconv.Itoa(status), msg
	return e
}

// parseRetryAfter reads delay-seconds or an HTTP date; zero when absent or
// unparsable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
