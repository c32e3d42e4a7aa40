package sidecar

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tusou/tusou/esproxy"
)

// upstream sends requests to Elasticsearch: the addresses, credentials and
// CA of the elasticsearch section, round-robin over the nodes.
type upstream struct {
	addrs   []*url.URL
	next    atomic.Uint64
	client  *http.Client
	auth    string // Authorization value in replace mode, else ""
	replace bool
}

func newUpstream(es esproxy.Config, mode string) (*upstream, error) {
	if len(es.Addresses) == 0 {
		return nil, errors.New("elasticsearch.addresses: must list at least one Elasticsearch URL")
	}
	u := &upstream{replace: mode == CredentialsReplace}
	for i, a := range es.Addresses {
		p, err := url.Parse(a)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("elasticsearch.addresses[%d]: must be an http:// or https:// URL, got %q", i, a)
		}
		p.Path = strings.TrimSuffix(p.Path, "/")
		u.addrs = append(u.addrs, p)
	}
	switch {
	case es.APIKey != "":
		u.auth = "ApiKey " + es.APIKey
	case es.Username != "":
		u.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(es.Username+":"+es.Password))
	}
	if u.replace && u.auth == "" {
		return nil, errors.New("credentials: replace needs elasticsearch.username/password or elasticsearch.api_key")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Elasticsearch is reached directly, never through an environment proxy.
	tr.Proxy = nil
	// Pass Accept-Encoding and compressed answers through untouched: Go's
	// transparent gzip would decompress what the client asked to get compressed.
	tr.DisableCompression = true
	// Bulk clients run many requests in parallel (helpers.parallel_bulk,
	// esutil.BulkIndexer workers); keep their connections.
	tr.MaxIdleConnsPerHost = 64
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if es.CACert != "" {
		pem, err := os.ReadFile(es.CACert)
		if err != nil {
			return nil, fmt.Errorf("elasticsearch.ca_cert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("elasticsearch.ca_cert: no PEM certificate in %s", es.CACert)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	u.client = &http.Client{
		Transport: tr,
		// Redirects go back to the client as Elasticsearch sent them.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return u, nil
}

func (u *upstream) close() { u.client.CloseIdleConnections() }

// hopHeaders are connection-level headers a proxy must not forward (RFC 9110 7.6.1).
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// outRequest describes one upstream call.
type outRequest struct {
	method   string
	path     string // escaped path, as the client sent it
	rawQuery string
	header   http.Header // the client's headers; copied, not modified
	// body is streamed when bufs is nil (cannot be retried); bufs is a body
	// the sidecar built (retried on another node when a connection fails).
	body          io.Reader
	contentLength int64
	bufs          [][]byte
	// dropHeaders are removed after copying (e.g. Content-Encoding of a body
	// the sidecar decoded).
	dropHeaders []string
}

// do sends r to the next node. It moves on to the other nodes only when a
// connection could not be made, so nothing was sent.
func (u *upstream) do(ctx context.Context, r outRequest) (*http.Response, error) {
	start := u.next.Add(1)
	var lastErr error
	tries := len(u.addrs)
	if r.bufs == nil && r.body != nil {
		tries = 1
	}
	for t := 0; t < tries; t++ {
		base := u.addrs[(int(start)+t)%len(u.addrs)]
		req, err := u.build(ctx, base, r)
		if err != nil {
			return nil, err
		}
		resp, err := u.client.Do(req)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		if !isDialError(err) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func (u *upstream) build(ctx context.Context, base *url.URL, r outRequest) (*http.Request, error) {
	target := *base
	target.RawPath = base.EscapedPath() + r.path
	if p, err := url.PathUnescape(target.RawPath); err == nil {
		target.Path = p
	}
	target.RawQuery = r.rawQuery
	var body io.Reader
	length := r.contentLength
	if r.bufs != nil {
		nb := make(net.Buffers, len(r.bufs))
		copy(nb, r.bufs)
		body = &nb
		length = 0
		for _, b := range r.bufs {
			length += int64(len(b))
		}
		if length == 0 {
			body = nil
		}
	} else if r.body != nil {
		body = r.body
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target.String(), body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = length
	if body == nil {
		req.ContentLength = 0
	}
	for k, vs := range r.header {
		req.Header[k] = append([]string(nil), vs...)
	}
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	for _, h := range r.dropHeaders {
		req.Header.Del(h)
	}
	req.Header.Del("Content-Length")
	// The sidecar already has the body (or streams it as it arrives); a
	// 100-continue round trip upstream would only add latency.
	req.Header.Del("Expect")
	if u.replace {
		// The gateway's credentials act for the client: nothing the client
		// sends may widen them (run as another user, a secondary identity,
		// or an Elastic product's origin, which lifts deprecation and
		// system-index guards).
		for _, h := range replaceStripped {
			req.Header.Del(h)
		}
		req.Header.Set("Authorization", u.auth)
	}
	return req, nil
}

// replaceStripped are client headers dropped in replace mode.
var replaceStripped = []string{"Es-Secondary-Authorization", "Es-Security-Runas-User", "X-Elastic-Product-Origin"}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// upstreamError maps a failed upstream call to Elasticsearch's shape.
func upstreamError(ctx context.Context, err error) *esError {
	var mbe *http.MaxBytesError
	var ee *esError
	switch {
	case errors.As(err, &ee):
		return ee
	case errors.As(err, &mbe):
		return tooLarge(mbe.Limit)
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return newESError(http.StatusGatewayTimeout, typeTimeout, "Elasticsearch did not answer in time")
	case errors.Is(ctx.Err(), context.Canceled):
		return newESError(499, typeTimeout, "request canceled")
	}
	return newESError(http.StatusBadGateway, typeUpstream, "Elasticsearch is not reachable: "+err.Error())
}

// copyResponse streams an upstream answer to the client unchanged: status,
// headers (X-Elastic-Product, Content-Encoding, Warning, ...) and body bytes.
func copyResponse(w http.ResponseWriter, resp *http.Response) error {
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	w.WriteHeader(resp.StatusCode)
	buf := make([]byte, 32<<10)
	_, err := io.CopyBuffer(flushWriter{w}, resp.Body, buf)
	return err
}

// flushWriter flushes after every write so a slow answer (a long scroll
// page) reaches the client as it arrives instead of sitting in a buffer.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

// requestDeadline applies the sidecar's timeout to a request context.
func requestDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
