package gateway

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
)

// statusOf is the one mapping from error kinds to HTTP statuses.
var statusOf = map[apierr.Kind]int{
	apierr.Internal:             http.StatusInternalServerError,
	apierr.InvalidArgument:      http.StatusBadRequest,
	apierr.Unauthorized:         http.StatusUnauthorized,
	apierr.Forbidden:            http.StatusForbidden,
	apierr.NotFound:             http.StatusNotFound,
	apierr.Conflict:             http.StatusConflict,
	apierr.TooLarge:             http.StatusRequestEntityTooLarge,
	apierr.UnsupportedMediaType: http.StatusUnsupportedMediaType,
	apierr.Unprocessable:        http.StatusUnprocessableEntity,
	apierr.Overloaded:           http.StatusTooManyRequests,
	apierr.Canceled:             499, // nginx's "client closed request"; nobody reads it but the logs
	apierr.BadGateway:           http.StatusBadGateway,
	apierr.Unavailable:          http.StatusServiceUnavailable,
	apierr.Timeout:              http.StatusGatewayTimeout,
}

// errorBody is the JSON shape of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// publicError normalises any error into an *apierr.Error: context errors
// become Timeout/Canceled, anything unknown becomes an opaque Internal error.
func publicError(err error) *apierr.Error {
	if e := apierr.As(err); e != nil {
		return e
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return apierr.Wrap(err, apierr.Timeout, "deadline_exceeded", "the request took longer than its deadline")
	case errors.Is(err, context.Canceled):
		return apierr.Wrap(err, apierr.Canceled, "canceled", "the request was canceled")
	}
	return apierr.Wrap(err, apierr.Internal, "internal", "internal error")
}

// errorStatus returns the HTTP status for err.
func errorStatus(err error) int {
	return statusOf[publicError(err).Kind]
}

// abortWithError renders err as the response. It is the only place errors
// become HTTP: handlers just return them through this.
func abortWithError(c *gin.Context, err error) {
	c.AbortWithStatusJSON(setErrorHeaders(c, err), errorResponse(err))
}

func setErrorHeaders(c *gin.Context, err error) int {
	e := publicError(err)
	status := statusOf[e.Kind]
	if e.RetryAfter > 0 {
		secs := int(e.RetryAfter.Seconds() + 0.999)
		c.Header("Retry-After", strconv.Itoa(secs))
	}
	c.Set(ctxErrorKey, e)
	return status
}

func errorResponse(err error) errorBody {
	e := publicError(err)
	msg := e.Message
	if e.Kind == apierr.Internal {
		msg = "internal error" // never leak internals
	}
	return errorBody{Error: errorDetail{Code: e.Code, Message: msg}}
}

// itemError renders an error inside a multi-item response.
func itemError(err error) *errorDetail {
	if err == nil {
		return nil
	}
	d := errorResponse(err).Error
	return &d
}

// logError adds the error to the access log entry fields.
func logError(fields []zap.Field, c *gin.Context) []zap.Field {
	v, ok := c.Get(ctxErrorKey)
	if !ok {
		return fields
	}
	e := v.(*apierr.Error)
	fields = append(fields, zap.String("error_code", e.Code))
	if e.Err != nil {
		fields = append(fields, zap.NamedError("error", e.Err))
	}
	return fields
}
