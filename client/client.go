// Package client is a typed Go client for tusou's native REST API (/v1):
// multi-file ingest, existence checks by id, search by text or image,
// more-like-this, and the admin API's model generations (Models*, with
// WithAdminKey). Every call takes a context. Calls answered 429 or 503
// (honouring Retry-After), 502 or 504, and calls that fail to connect, are
// retried with exponential back-off: that is safe for ingest too, because an
// image's default id is the SHA-256 of its bytes, so a repeated upload answers
// "exists" instead of creating a second document. A rollback or a prune is
// repeated only when the gateway surely did not act on it.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to one gateway. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	http      *http.Client
	apiKey    string
	adminKey  string
	userAgent string
	retry     Retry
	// sleep waits between attempts; a seam so tests can record the waits.
	sleep func(ctx context.Context, d time.Duration) error
}

// Retry is the back-off policy for retryable failures.
type Retry struct {
	// MaxAttempts counts every attempt, the first included; 1 disables retries.
	MaxAttempts int
	// Initial is the first back-off; each retry doubles it (with jitter) up to Max.
	Initial time.Duration
	// Max caps the back-off.
	Max time.Duration
	// MaxRetryAfter caps how long a server's Retry-After is honoured, so a
	// misconfigured server cannot park a client for hours.
	MaxRetryAfter time.Duration
}

// DefaultRetry rides out a gateway restart or a burst of 429s: 8 attempts
// wait about 0.25+0.5+1+2+4+8+15 ≈ 31 s in all before giving up.
func DefaultRetry() Retry {
	return Retry{MaxAttempts: 8, Initial: 250 * time.Millisecond, Max: 15 * time.Second, MaxRetryAfter: time.Minute}
}

// Option configures a Client.
type Option func(*Client)

// WithAPIKey sends "Authorization: ApiKey <key>" with every request.
func WithAPIKey(key string) Option { return func(c *Client) { c.apiKey = key } }

// WithAdminKey sends "Authorization: ApiKey <key>" with the admin API's
// calls (the Models* methods) instead of the API key: the gateway checks
// them against auth.admin_keys, which are separate from auth.api_keys.
func WithAdminKey(key string) Option { return func(c *Client) { c.adminKey = key } }

// WithHTTPClient replaces the default HTTP client (no overall timeout: the
// caller's context bounds each call).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithRetry replaces DefaultRetry.
func WithRetry(r Retry) Option { return func(c *Client) { c.retry = r } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// New returns a client for the gateway at baseURL (e.g. http://127.0.0.1:8080).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("gateway URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("gateway URL %q: want http://host:port or https://host:port", baseURL)
	}
	c := &Client{base: u, http: &http.Client{}, userAgent: "tusou-client", retry: DefaultRetry(), sleep: sleepCtx}
	for _, o := range opts {
		o(c)
	}
	if c.retry.MaxAttempts < 1 {
		c.retry.MaxAttempts = 1
	}
	return c, nil
}

// URL is the gateway's base URL.
func (c *Client) URL() string { return c.base.String() }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// request is one API call; body is rebuilt from the same bytes on every attempt.
type request struct {
	method, path string
	query        url.Values
	body         []byte
	contentType  string
	// admin sends the admin key instead of the API key.
	admin bool
	// unsafe marks a call that must not run twice: it is retried only when
	// the gateway surely did not act on it (the connection was refused, or
	// it answered 429 or 503).
	unsafe bool
}

// maxResponseBytes bounds what is read of an answer: 1000 hits with
// metadata are well under this.
const maxResponseBytes = 64 << 20

// do performs r with retries and decodes a 2xx JSON answer into out.
func (c *Client) do(ctx context.Context, r request, out any) error {
	u := *c.base
	u.Path += r.path
	u.RawQuery = r.query.Encode()
	for attempt := 1; ; attempt++ {
		status, header, body, err := c.once(ctx, r, u.String())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if attempt >= c.retry.MaxAttempts || !retryableTransport(err) || (r.unsafe && !dialFailed(err)) {
				return &TransportError{Method: r.method, URL: u.String(), Attempts: attempt, Err: err}
			}
			if werr := c.sleep(ctx, c.backoff(attempt)); werr != nil {
				return werr
			}
			continue
		}
		if status >= 200 && status < 300 {
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(body, out); err != nil {
				return fmt.Errorf("%s %s: answer is not the expected JSON: %w", r.method, r.path, err)
			}
			return nil
		}
		apiErr := parseAPIError(status, header, body)
		if attempt >= c.retry.MaxAttempts || !retryableStatus(status) || (r.unsafe && !refusedUnread(status)) {
			apiErr.Attempts = attempt
			return apiErr
		}
		wait := c.backoff(attempt)
		if apiErr.RetryAfter > 0 {
			wait = min(apiErr.RetryAfter, c.retry.MaxRetryAfter)
		}
		if werr := c.sleep(ctx, wait); werr != nil {
			return werr
		}
	}
}

func (c *Client) once(ctx context.Context, r request, u string) (int, http.Header, []byte, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return 0, nil, nil, err
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	key := c.apiKey
	if r.admin {
		key = c.adminKey
	}
	if key != "" {
		req.Header.Set("Authorization", "ApiKey "+key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		// The answer was cut off: for the caller this is a connection failure.
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, b, nil
}

// backoff is the wait before attempt+1: Initial·2^(attempt-1), capped at
// Max, with "equal jitter" (half fixed, half random) so that many workers
// hitting the same 503 do not come back in lockstep.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.retry.Initial << min(attempt-1, 20)
	if d <= 0 || d > c.retry.Max {
		d = c.retry.Max
	}
	half := d / 2
	return half + rand.N(half+1)
}

func retryableStatus(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// refusedUnread says whether an answer means the gateway turned the request
// away before acting on it: its admission answers 429 and 503. A 502 or 504
// comes from a proxy that may have passed the request on.
func refusedUnread(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
}

// dialFailed says whether the request never reached the gateway because
// the connection could not be made.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retryableTransport says whether a failed round trip may succeed later:
// refused or reset connections and timeouts may, a certificate problem won't.
func retryableTransport(err error) bool {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		return false
	case strings.Contains(err.Error(), "unsupported protocol scheme"):
		return false
	}
	return true
}
