package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tusou/tusou/apierr"
)

func validS3() S3Config {
	c := DefaultS3Config()
	c.AccessKey, c.SecretKey = "AKIAEXAMPLE", "secret"
	return c
}

func TestS3ConfigValidate(t *testing.T) {
	if err := validS3().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	fileOnly := validS3()
	fileOnly.SecretKey, fileOnly.SecretKeyFile = "", "/var/run/secrets/s3/secret_key"
	if err := fileOnly.Validate(); err != nil {
		t.Fatalf("secret_key_file alone: %v", err)
	}
	for name, tc := range map[string]struct {
		mutate func(*S3Config)
		want   string
	}{
		"no endpoint":       {func(c *S3Config) { c.Endpoint = "" }, "endpoint: must be"},
		"scheme":            {func(c *S3Config) { c.Endpoint = "https://s3.example.com" }, "endpoint: want host or host:port without a scheme"},
		"path":              {func(c *S3Config) { c.Endpoint = "s3.example.com/bucket" }, "endpoint: want host or host:port, no path"},
		"bucket upper case": {func(c *S3Config) { c.Bucket = "Originals" }, `bucket: "Originals" is not a valid bucket name`},
		"bucket empty":      {func(c *S3Config) { c.Bucket = "" }, "bucket: "},
		"no access key":     {func(c *S3Config) { c.AccessKey = "" }, "access_key: must be set"},
		"no secret":         {func(c *S3Config) { c.SecretKey = "" }, "secret_key: set secret_key_file or secret_key"},
		"ca without tls":    {func(c *S3Config) { c.CACert = "/ca.pem" }, "ca_cert: only applies with tls: true"},
		"absolute prefix":   {func(c *S3Config) { c.Prefix = "/originals/" }, "prefix: must not start with /"},
	} {
		t.Run(name, func(t *testing.T) {
			c := validS3()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestS3KeyIsPrefixPlusIDHash(t *testing.T) {
	s := &S3{prefix: "originals/"}
	hexKey := regexp.MustCompile(`^originals/[0-9a-f]{64}$`)
	for _, id := range []string{"a", "../../etc/passwd", "/abs", "猫 ?x=1#y", strings.Repeat("z", 2000)} {
		k := s.key(id)
		sum := sha256.Sum256([]byte(id))
		if k != "originals/"+hex.EncodeToString(sum[:]) || !hexKey.MatchString(k) {
			t.Errorf("key(%q) = %q", id, k)
		}
	}
	// Dir and S3 name a blob alike, so moving originals between backends is a copy.
	d := &Dir{root: "/r"}
	if name := filepath.Base(d.path("a")); "originals/"+name != s.key("a") {
		t.Errorf("Dir names %q, S3 %q", name, s.key("a"))
	}
}

// fakeS3 answers every request with status and an S3 error document of code.
func fakeS3(t *testing.T, status int, code string) *S3 {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>fake</Message></Error>`, code)
		}
	}))
	t.Cleanup(srv.Close)
	cfg := validS3()
	cfg.Endpoint = strings.TrimPrefix(srv.URL, "http://")
	s, err := newS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestS3ErrorsMapToKinds(t *testing.T) {
	ctx := context.Background()
	type result struct {
		kind  apierr.Kind
		code  string
		retry bool
	}
	for name, tc := range map[string]struct {
		status      int
		code        string
		put, open   result
		deleteError result
	}{
		"503 slow down": {503, "SlowDown",
			result{apierr.Unavailable, CodeUnavailable, true}, result{apierr.Unavailable, CodeUnavailable, true}, result{apierr.Unavailable, CodeUnavailable, true}},
		"500": {500, "InternalError",
			result{apierr.Unavailable, CodeUnavailable, true}, result{apierr.Unavailable, CodeUnavailable, true}, result{apierr.Unavailable, CodeUnavailable, true}},
		"403 signature": {403, "SignatureDoesNotMatch",
			result{apierr.BadGateway, CodeCredentials, false}, result{apierr.BadGateway, CodeCredentials, false}, result{apierr.BadGateway, CodeCredentials, false}},
		"404 key": {404, "NoSuchKey",
			result{apierr.BadGateway, CodeWriteFailed, false}, result{apierr.NotFound, CodeNotFound, false}, result{apierr.BadGateway, CodeDeleteFailed, false}},
		// Open's first request is a HEAD, whose 404 has no body to tell a
		// missing bucket from a missing key; NewS3 checked the bucket.
		"404 bucket": {404, "NoSuchBucket",
			result{apierr.BadGateway, CodeBucketNotFound, false}, result{apierr.NotFound, CodeNotFound, false}, result{apierr.BadGateway, CodeBucketNotFound, false}},
		"400 other": {400, "InvalidRequest",
			result{apierr.BadGateway, CodeWriteFailed, false}, result{apierr.BadGateway, CodeReadFailed, false}, result{apierr.BadGateway, CodeDeleteFailed, false}},
	} {
		t.Run(name, func(t *testing.T) {
			s := fakeS3(t, tc.status, tc.code)
			_, _, openErr := s.Open(ctx, "x")
			for op, c := range map[string]struct {
				err  error
				want result
			}{
				"put": {s.Put(ctx, "x", []byte("data")), tc.put}, "open": {openErr, tc.open}, "delete": {s.Delete(ctx, "x"), tc.deleteError},
			} {
				e := apierr.As(c.err)
				if e == nil || e.Kind != c.want.kind || e.Code != c.want.code || (e.RetryAfter > 0) != c.want.retry {
					t.Errorf("%s: want %s %s (retry hint %v), got %v", op, c.want.kind, c.want.code, c.want.retry, c.err)
				}
			}
		})
	}
}

func TestS3CanceledContext(t *testing.T) {
	s := fakeS3(t, 200, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(ctx, "x", []byte("x")); apierr.KindOf(err) != apierr.Canceled {
		t.Fatalf("want Canceled, got %v", err)
	}
}

func TestNewS3FileSettings(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	notPEM := filepath.Join(dir, "ca.pem")
	for _, f := range []string{empty, notPEM} {
		if err := os.WriteFile(f, []byte(" \n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, tc := range map[string]struct {
		mutate func(*S3Config)
		want   string
	}{
		"missing secret file": {func(c *S3Config) { c.SecretKeyFile = filepath.Join(dir, "nope") }, "blobs.s3.secret_key_file: open"},
		"empty secret file":   {func(c *S3Config) { c.SecretKeyFile = empty }, "blobs.s3.secret_key_file: " + empty + " is empty"},
		"missing ca":          {func(c *S3Config) { c.TLS, c.CACert = true, filepath.Join(dir, "nope") }, "blobs.s3.ca_cert: open"},
		"ca not PEM":          {func(c *S3Config) { c.TLS, c.CACert = true, notPEM }, "blobs.s3.ca_cert: no PEM certificate in " + notPEM},
	} {
		t.Run(name, func(t *testing.T) {
			c := validS3()
			tc.mutate(&c)
			_, err := NewS3(ctx, c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestNewPicksTheBackend(t *testing.T) {
	ctx := context.Background()
	s, err := New(ctx, BackendDir, "", S3Config{})
	if err != nil || s != nil {
		t.Fatalf("dir backend with no folder: want no store, got %v, %v", s, err)
	}
	s, err = New(ctx, BackendDir, t.TempDir(), S3Config{})
	if _, ok := s.(*Dir); err != nil || !ok {
		t.Fatalf("dir backend: got %T, %v", s, err)
	}
	// A folder that cannot be made: the error, not a nil *Dir in a non-nil Store.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = New(ctx, BackendDir, filepath.Join(file, "sub"), S3Config{})
	if err == nil || s != nil {
		t.Fatalf("unusable folder: got %v, %v", s, err)
	}
	if _, err := New(ctx, "gcs", "", S3Config{}); err == nil || !strings.Contains(err.Error(), `blobs.backend: want dir or s3, got "gcs"`) {
		t.Fatalf("unknown backend: %v", err)
	}
	if _, err := New(ctx, BackendS3, "", S3Config{}); err == nil || !strings.Contains(err.Error(), "access_key") {
		t.Fatalf("s3 backend with no settings: %v", err)
	}
}
