package sidecar

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Inference (GPU time, image_url fetches) is never free to a client
// Elasticsearch would turn away:
//
//   - replace mode: every request must carry one of sidecar.api_keys
//     (Authorization: ApiKey <key>), checked before anything else;
//   - forward mode: before the first embedding of a request, Elasticsearch
//     authenticates the client's own credentials (GET
//     /_security/_authenticate with the client's headers). A 401 there is
//     the client's answer, with Elasticsearch's WWW-Authenticate, and
//     nothing is computed. Any other answer admits: a cluster without
//     security (or with anonymous access) serves the client anyway.
//     Admissions are cached per credential for authCacheTTL, refusals never.

// authCacheTTL is how long a credential Elasticsearch accepted is trusted
// for inference without asking again. Elasticsearch still checks it on
// every forwarded call; the cache only spares a round trip per request.
const authCacheTTL = time.Minute

// authCacheMax bounds the cache; it is emptied when full.
const authCacheMax = 4096

type authCache struct {
	mu sync.Mutex
	ok map[[32]byte]time.Time
}

func (c *authCache) get(k [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.ok[k]
	return ok && time.Since(t) < authCacheTTL
}

func (c *authCache) put(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ok == nil || len(c.ok) >= authCacheMax {
		c.ok = map[[32]byte]time.Time{}
	}
	c.ok[k] = time.Now()
}

// credentialHeaders are the headers Elasticsearch authenticates a request by.
var credentialHeaders = []string{"Authorization", "Es-Security-Runas-User", "Es-Secondary-Authorization"}

// checkAPIKey admits a client in replace mode.
func (s *Sidecar) checkAPIKey(r *http.Request) *esError {
	h := r.Header.Get("Authorization")
	scheme, key, _ := strings.Cut(h, " ")
	if h == "" {
		return unauthenticated("missing authentication credentials for REST request [" + r.URL.Path + "]")
	}
	if strings.EqualFold(scheme, "ApiKey") {
		key = strings.TrimSpace(key)
		for _, k := range s.cfg.APIKeys {
			if subtle.ConstantTimeCompare([]byte(k), []byte(key)) == 1 {
				return nil
			}
		}
	}
	return unauthenticated("unable to authenticate with provided credentials for REST request [" + r.URL.Path + "]")
}

func unauthenticated(reason string) *esError {
	e := newESError(http.StatusUnauthorized, typeSecurity, reason)
	e.WWWAuthenticate = []string{`ApiKey`}
	return e
}

// gate settles inference admission once per request, on first use.
type gate struct {
	once sync.Once
	err  *esError
	run  func() *esError
}

type gateKey struct{}

// withGate attaches the request's inference admission to its context;
// acquire (every embedding) and msearch consult it.
func (s *Sidecar) withGate(r *http.Request) *http.Request {
	if s.cfg.Credentials != CredentialsForward {
		return r // replace mode: the API key was checked on arrival
	}
	g := &gate{run: func() *esError { return s.authenticate(r) }}
	return r.WithContext(context.WithValue(r.Context(), gateKey{}, g))
}

// admitted returns the request's admission error, asking Elasticsearch
// the first time.
func admitted(ctx context.Context) *esError {
	g, ok := ctx.Value(gateKey{}).(*gate)
	if !ok {
		return nil
	}
	g.once.Do(func() { g.err = g.run() })
	return g.err
}

// authenticate asks Elasticsearch whether it accepts the client's credentials.
func (s *Sidecar) authenticate(r *http.Request) *esError {
	h := sha256.New()
	for _, k := range credentialHeaders {
		for _, v := range r.Header.Values(k) {
			h.Write([]byte(k + ":" + v + "\n"))
		}
	}
	var key [32]byte
	h.Sum(key[:0])
	if s.auth.get(key) {
		return nil
	}
	hdr := http.Header{}
	for _, k := range credentialHeaders {
		if v := r.Header.Values(k); len(v) > 0 {
			hdr[k] = v
		}
	}
	resp, err := s.up.do(r.Context(), outRequest{method: http.MethodGet, path: "/_security/_authenticate", header: hdr})
	if err != nil {
		return upstreamError(r.Context(), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusUnauthorized {
		s.auth.put(key)
		return nil
	}
	// Elasticsearch's own refusal, about the client's request.
	e := newESError(http.StatusUnauthorized, typeSecurity, "missing authentication credentials for REST request ["+r.URL.Path+"]")
	var es struct {
		Error struct {
			Type, Reason string
		}
	}
	if json.Unmarshal(body, &es) == nil && es.Error.Type != "" {
		e.Type = es.Error.Type
		e.Reason = strings.ReplaceAll(es.Error.Reason, "[/_security/_authenticate]", "["+r.URL.Path+"]")
	}
	e.WWWAuthenticate = resp.Header.Values("WWW-Authenticate")
	return e
}
