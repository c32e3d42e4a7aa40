//go:build integration

package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/internal/testutil"
)

// The gateway against the local stack's secured Elasticsearch node (HTTPS
// with a generated CA, authentication on; make up starts it): each
// credential kind, and the start-up errors of wrong credentials and a
// wrong CA.

func secureES(t *testing.T) testutil.SecureES {
	t.Helper()
	sec, err := testutil.LoadSecureES()
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// onSecureNode points the gateway at the secured node, trusting its CA.
func onSecureNode(sec testutil.SecureES, creds func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		c.Elasticsearch.Addresses = []string{sec.URL}
		c.Elasticsearch.CACert = sec.CACert
		creds(c)
	}
}

// deleteSecureAlias deletes the concrete indices behind alias on the
// secured node (startGateway's cleanup talks to the plain node).
func deleteSecureAlias(t *testing.T, sec testutil.SecureES, alias string) {
	req, _ := http.NewRequest("GET", sec.URL+"/_alias/"+alias, nil)
	resp, err := sec.Do(req)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer resp.Body.Close()
	var indices map[string]any
	json.NewDecoder(resp.Body).Decode(&indices)
	for name := range indices {
		req, _ := http.NewRequest("DELETE", sec.URL+"/"+name, nil)
		if r, err := sec.Do(req); err == nil {
			r.Body.Close()
		}
	}
}

// secureCount counts alias's documents as the test user.
func secureCount(t *testing.T, sec testutil.SecureES, alias string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", sec.URL+"/"+alias+"/_count", nil)
	resp, err := sec.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Count int }
	json.NewDecoder(resp.Body).Decode(&out)
	return out.Count
}

// TestGatewayOnSecuredNodeWithBasicAuth: with elasticsearch.username and
// password over HTTPS (ca_cert), the gateway creates its index, ingests,
// finds an image by itself and deletes it on the secured node.
func TestGatewayOnSecuredNodeWithBasicAuth(t *testing.T) {
	sec := secureES(t)
	var s *stack
	// Registered first, so it runs after startGateway has shut the gateway down.
	t.Cleanup(func() {
		if s != nil {
			deleteSecureAlias(t, sec, s.alias)
		}
	})
	s = startGateway(t, onSecureNode(sec, func(c *config.Config) {
		c.Elasticsearch.Username, c.Elasticsearch.Password = sec.Username, sec.Password
	}))
	fx := mustFixtures(t)[:3]
	files := map[string][]byte{}
	for _, f := range fx {
		files[f.File] = readFile(t, f.Path)
	}
	status, body := postFiles(t, s.url+"/v1/images", files, nil)
	var ing ingestResponse
	json.Unmarshal(body, &ing)
	if status != 201 || ing.Errors || len(ing.Items) != len(files) {
		t.Fatalf("ingest on the secured node: %d %s", status, body)
	}
	if n := secureCount(t, sec, s.alias); n != len(files) {
		t.Fatalf("secured node holds %d documents after ingest, want %d", n, len(files))
	}
	status, body = postFiles(t, s.url+"/v1/search/image", map[string][]byte{"q.jpg": files[fx[0].File]}, map[string]string{"k": "3"})
	var sr searchResponse
	json.Unmarshal(body, &sr)
	if status != 200 || len(sr.Hits) != 3 || sr.Hits[0].ID != fx[0].SHA256 {
		t.Fatalf("search on the secured node: %d %s (want %s first)", status, body, fx[0].SHA256)
	}
	req, _ := http.NewRequest("DELETE", s.url+"/v1/images/"+fx[0].SHA256, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("delete on the secured node: %d", resp.StatusCode)
	}
	if n := secureCount(t, sec, s.alias); n != len(files)-1 {
		t.Fatalf("secured node holds %d documents after a delete, want %d", n, len(files)-1)
	}
}

// buildErr builds a gateway that must fail to start, and returns the error.
// Configuration errors must fail at once, not after start-up retries.
func buildErr(t *testing.T, mutate func(*config.Config)) error {
	t.Helper()
	cfg := config.Default()
	var b [4]byte
	rand.Read(b[:])
	cfg.Elasticsearch.Index = "tusou-it-" + hex.EncodeToString(b[:])
	cfg.Blobs.Dir = t.TempDir()
	cfg.Text.TokenizerPath = testutil.TokenizerPath()
	mutate(cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	a, err := Build(ctx, cfg, zap.NewNop(), "test")
	if err == nil {
		a.close(context.Background())
		t.Fatal("the gateway started")
	}
	if ctx.Err() != nil {
		t.Fatalf("start-up retried until its deadline instead of failing: %v", err)
	}
	return err
}

// TestGatewayOnSecuredNodeWrongCredentials: a wrong password, no
// credentials, and an API key the node does not know each stop the gateway
// at start-up with an error naming the settings and Elasticsearch's reason.
func TestGatewayOnSecuredNodeWrongCredentials(t *testing.T) {
	sec := secureES(t)
	cases := []struct {
		name   string
		creds  func(*config.Config)
		reason string // Elasticsearch's, quoted in the error
	}{
		{"wrong password", func(c *config.Config) {
			c.Elasticsearch.Username, c.Elasticsearch.Password = sec.Username, sec.Password+"x"
		}, "unable to authenticate user [" + sec.Username + "]"},
		{"no credentials", func(*config.Config) {}, "missing authentication credentials"},
		// The test distribution cannot store API keys (no .security index),
		// so every key is unknown to it: the header reaches Elasticsearch
		// (the reason is not "missing credentials") and is refused.
		{"unknown api key", func(c *config.Config) {
			c.Elasticsearch.APIKey = base64.StdEncoding.EncodeToString([]byte("tusou-test-id:not-a-key"))
		}, "unable to authenticate with provided credentials"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := buildErr(t, onSecureNode(sec, tc.creds))
			msg := err.Error()
			for _, want := range []string{"es_credentials", "elasticsearch refused the gateway's credentials", "elasticsearch.username/password or elasticsearch.api_key", "HTTP 401", tc.reason} {
				if !strings.Contains(msg, want) {
					t.Errorf("start-up error lacks %q:\n%s", want, msg)
				}
			}
		})
	}
}

// TestGatewayOnSecuredNodeWrongCA: a CA that did not sign the node's
// certificate, or none (system roots), stops the gateway at start-up with
// a TLS error naming elasticsearch.ca_cert.
func TestGatewayOnSecuredNodeWrongCA(t *testing.T) {
	sec := secureES(t)
	otherCA := writeSelfSignedCA(t)
	for name, ca := range map[string]string{"other CA": otherCA, "system roots": ""} {
		t.Run(name, func(t *testing.T) {
			err := buildErr(t, onSecureNode(sec, func(c *config.Config) {
				c.Elasticsearch.CACert = ca
				c.Elasticsearch.Username, c.Elasticsearch.Password = sec.Username, sec.Password
			}))
			msg := err.Error()
			for _, want := range []string{"es_tls", "TLS certificate could not be verified", "elasticsearch.ca_cert", "x509: certificate signed by unknown authority"} {
				if !strings.Contains(msg, want) {
					t.Errorf("start-up error lacks %q:\n%s", want, msg)
				}
			}
		})
	}
}

// writeSelfSignedCA writes a fresh CA certificate (PEM) and returns its path.
func writeSelfSignedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the node's CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
