// Package apierr is tusou's one error type. Components (preprocess, triton,
// esproxy, ...) return *Error values that say what went wrong in terms of a
// Kind; the gateway maps each Kind to an HTTP status in exactly one place and
// renders the public message. Components never pick HTTP statuses themselves.
package apierr

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an error by what the caller can do about it.
type Kind int

// Kinds, from the caller's point of view. The gateway owns the mapping to HTTP.
const (
	// Internal is a bug or an unexpected state: 500, message not exposed.
	Internal Kind = iota
	// InvalidArgument is a malformed or out-of-range request field: 400.
	InvalidArgument
	// Unauthorized is a missing or wrong API key: 401.
	Unauthorized
	// Forbidden is a refused operation: 403.
	Forbidden
	// NotFound is an unknown resource: 404.
	NotFound
	// Conflict is a write that clashes with existing state: 409.
	Conflict
	// TooLarge is a body or image over a byte limit: 413.
	TooLarge
	// UnsupportedMediaType is an image format or content type that is not accepted: 415.
	UnsupportedMediaType
	// Unprocessable is well-formed input that cannot be used (corrupt image, too many pixels): 422.
	Unprocessable
	// Overloaded is a full queue: 429 with Retry-After.
	Overloaded
	// Canceled is a request the client gave up on: 499.
	Canceled
	// BadGateway is a dependency answering with an error: 502.
	BadGateway
	// Unavailable is a dependency that cannot be reached or is not ready: 503 with Retry-After.
	Unavailable
	// Timeout is a dependency that did not answer in time: 504.
	Timeout
)

var kindNames = map[Kind]string{
	Internal: "internal", InvalidArgument: "invalid_argument", Unauthorized: "unauthorized",
	Forbidden: "forbidden", NotFound: "not_found", Conflict: "conflict", TooLarge: "too_large",
	UnsupportedMediaType: "unsupported_media_type", Unprocessable: "unprocessable",
	Overloaded: "overloaded", Canceled: "canceled", BadGateway: "bad_gateway",
	Unavailable: "unavailable", Timeout: "timeout",
}

// String returns the kind's snake_case name.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is an error with a kind, a stable machine-readable code, a message that
// is safe to show to clients, and an optional retry hint.
type Error struct {
	Kind Kind
	// Code is stable and machine-readable, e.g. "image_too_many_pixels".
	Code string
	// Message is safe to show to clients; it names the problem.
	Message string
	// RetryAfter, when positive, is sent as the Retry-After header.
	RetryAfter time.Duration
	// Err is the underlying cause, logged but never shown to clients.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// New returns an error of the given kind with a formatted public message.
func New(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap is New with a cause attached.
func Wrap(cause error, kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...), Err: cause}
}

// WithRetryAfter sets the retry hint and returns e.
func (e *Error) WithRetryAfter(d time.Duration) *Error {
	e.RetryAfter = d
	return e
}

// As returns the *Error in err's chain, or nil.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// KindOf returns the kind of err's *Error, or Internal.
func KindOf(err error) Kind {
	if e := As(err); e != nil {
		return e.Kind
	}
	return Internal
}
