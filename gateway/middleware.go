package gateway

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
)

const (
	ctxErrorKey     = "tusou.error"
	ctxRequestIDKey = "tusou.request_id"
	headerRequestID = "X-Request-Id"
)

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// requestID takes the caller's X-Request-Id when it is sane (so ids flow
// through the ingress) or makes one, and echoes it in the response.
func requestID() gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.GetHeader(headerRequestID)
		if !validRequestID.MatchString(id) {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		c.Set(ctxRequestIDKey, id)
		c.Header(headerRequestID, id)
		c.Next()
	}
}

// accessLog writes one structured line per request and records metrics.
func accessLog(log *zap.Logger, m *httpMetrics) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		m.inflight.Inc()
		c.Next()
		m.inflight.Dec()
		elapsed := time.Since(start)
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		status := c.Writer.Status()
		code := fmt.Sprint(status)
		m.requests.WithLabelValues(route, c.Request.Method, code).Inc()
		m.duration.WithLabelValues(route, c.Request.Method, code).Observe(elapsed.Seconds())
		if v, ok := c.Get(ctxErrorKey); ok && status < 500 {
			m.refusals.WithLabelValues(v.(*apierr.Error).Code).Inc()
		}
		fields := []zap.Field{
			zap.String("request_id", c.GetString(ctxRequestIDKey)),
			zap.String("method", c.Request.Method),
			zap.String("route", route),
			zap.String("path", c.Request.URL.Path),
			zap.Int("status", status),
			zap.Duration("duration", elapsed),
			zap.Int("bytes_out", c.Writer.Size()),
			zap.Int64("bytes_in", c.Request.ContentLength),
			zap.String("remote", c.ClientIP()),
		}
		fields = logError(fields, c)
		switch {
		case status >= 500:
			log.Error("request", fields...)
		case route == "/healthz" || route == "/readyz" || route == "/metrics":
			log.Debug("request", fields...)
		default:
			log.Info("request", fields...)
		}
	}
}

// recovery turns a panic in a handler into a 500 JSON error and a log line
// with the stack, keeping the process up.
func recovery(log *zap.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				log.Error("panic in handler", zap.Any("panic", r), zap.Stack("stack"),
					zap.String("request_id", c.GetString(ctxRequestIDKey)))
				abortWithError(c, apierr.New(apierr.Internal, "internal", "internal error"))
			}
		}()
		c.Next()
	}
}

// deadline bounds each request's context so Triton and Elasticsearch calls
// inherit it.
func deadline(d time.Duration) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), d)
		defer cancel()
		c.Request = c.Request.WithContext(ctx)
		c.Next()
	}
}

// bodyLimit refuses bodies over max before reading them when Content-Length
// says so, and caps reading otherwise (chunked uploads). After any error
// response it drains what is left of the body (drainAfterError), so the
// client gets to read the error.
func bodyLimit(max int64) gin.HandlerFunc {
	return func(c *gin.Context) {
		body := &trackedBody{ReadCloser: c.Request.Body}
		defer func() {
			// A client that waits for "100 Continue" and got the final
			// answer instead never sends the body: nothing to drain.
			if body.ReadCloser != nil && body.ReadCloser != http.NoBody &&
				(body.started || !strings.EqualFold(c.GetHeader("Expect"), "100-continue")) {
				drainAfterError(c, body)
			}
		}()
		if c.Request.ContentLength > max {
			abortWithError(c, apierr.New(apierr.TooLarge, "request_too_large",
				"request body is %d bytes; the limit is %d", c.Request.ContentLength, max))
			return
		}
		c.Request.Body = http.MaxBytesReader(c.Writer, body, max)
		c.Next()
	}
}

// trackedBody records whether the handler started reading the body.
type trackedBody struct {
	io.ReadCloser
	started bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.started = true
	return b.ReadCloser.Read(p)
}

// apiKeyAuth requires one of keys in "Authorization: ApiKey <key>",
// "Authorization: Bearer <key>" or "X-API-Key: <key>". Comparison is
// constant-time so keys cannot be guessed byte by byte.
func apiKeyAuth(keys []string) gin.HandlerFunc {
	return keyAuth(keys, "a valid API key is required (Authorization: ApiKey <key>)")
}

// keyAuth accepts requests carrying one of keys (Authorization: ApiKey or
// Bearer, or X-API-Key), compared in constant time; others get 401 with msg.
func keyAuth(keys []string, msg string) gin.HandlerFunc {
	want := make([][]byte, len(keys))
	for i, k := range keys {
		want[i] = []byte(k)
	}
	return func(c *gin.Context) {
		got := c.GetHeader("X-API-Key")
		if auth := c.GetHeader("Authorization"); auth != "" {
			scheme, val, _ := strings.Cut(auth, " ")
			if strings.EqualFold(scheme, "ApiKey") || strings.EqualFold(scheme, "Bearer") {
				got = strings.TrimSpace(val)
			}
		}
		ok := 0
		for _, w := range want {
			ok |= subtle.ConstantTimeCompare([]byte(got), w)
		}
		if got == "" || ok == 0 {
			c.Header("WWW-Authenticate", `ApiKey realm="tusou"`)
			abortWithError(c, apierr.New(apierr.Unauthorized, "unauthorized", "%s", msg))
			return
		}
		c.Next()
	}
}
