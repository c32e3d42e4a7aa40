//go:build integration

package blobstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/internal/testutil"
)

// s3Config is the local stack's object store (make up: deploy/local/s3.sh)
// with a prefix of the test's own, removed when the test ends.
func s3Config(t *testing.T) S3Config {
	t.Helper()
	local, err := testutil.LoadS3()
	if err != nil {
		t.Fatal(err)
	}
	cfg := S3Config{
		Endpoint: local.Endpoint, Bucket: local.Bucket, Region: local.Region,
		AccessKey: local.AccessKey, SecretKey: local.SecretKey,
		Prefix: "test-" + randomHex(t, 6) + "/",
	}
	t.Cleanup(func() { removePrefix(t, cfg) })
	return cfg
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// rawClient talks to the store directly, to look behind the backend.
func rawClient(t *testing.T, cfg S3Config) *minio.Client {
	t.Helper()
	c, err := minio.New(cfg.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""), Region: cfg.Region})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func removePrefix(t *testing.T, cfg S3Config) {
	c := rawClient(t, cfg)
	ctx := context.Background()
	for obj := range c.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Prefix: cfg.Prefix, Recursive: true}) {
		if obj.Err != nil {
			t.Errorf("listing %s: %v", cfg.Prefix, obj.Err)
			return
		}
		if err := c.RemoveObject(ctx, cfg.Bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil {
			t.Errorf("removing %s: %v", obj.Key, err)
		}
	}
}

func newTestS3(t *testing.T, cfg S3Config) *S3 {
	t.Helper()
	s, err := NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readBlob(t *testing.T, s *S3, id string) ([]byte, int64) {
	t.Helper()
	r, size, err := s.Open(context.Background(), id)
	if err != nil {
		t.Fatalf("open %q: %v", id, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %q: %v", id, err)
	}
	return b, size
}

func TestS3RoundTrip(t *testing.T) {
	ctx := context.Background()
	cfg := s3Config(t)
	s := newTestS3(t, cfg)
	id := "../../etc/passwd?x=1 猫"
	data := []byte("0123456789abcdefghij")
	if err := s.Put(ctx, id, data); err != nil {
		t.Fatal(err)
	}
	got, size := readBlob(t, s, id)
	if !bytes.Equal(got, data) || size != int64(len(data)) {
		t.Fatalf("got %q (size %d), want %q (%d)", got, size, data, len(data))
	}

	// The object's key is the prefix plus the SHA-256 of the id, whatever the id holds.
	sum := sha256.Sum256([]byte(id))
	if _, err := rawClient(t, cfg).StatObject(ctx, cfg.Bucket, cfg.Prefix+hex.EncodeToString(sum[:]), minio.StatObjectOptions{}); err != nil {
		t.Fatalf("object not under prefix+sha256(id): %v", err)
	}

	// Seeking: ranged reads from the start and from the end.
	r, _, err := s.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Seek(10, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 4)
	if _, err := io.ReadFull(r, part); err != nil || string(part) != "abcd" {
		t.Fatalf("after Seek(10, start): %q, %v", part, err)
	}
	if _, err := r.Seek(-3, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	tail, err := io.ReadAll(r)
	if err != nil || string(tail) != "hij" {
		t.Fatalf("after Seek(-3, end): %q, %v", tail, err)
	}
	r.Close()

	// Overwrite: the new bytes replace the old ones entirely.
	if err := s.Put(ctx, id, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if got, size := readBlob(t, s, id); string(got) != "short" || size != 5 {
		t.Fatalf("after overwrite: %q (%d)", got, size)
	}

	if err := s.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Open(ctx, id)
	if e := apierr.As(err); e == nil || e.Kind != apierr.NotFound || e.Code != CodeNotFound {
		t.Fatalf("open after delete: want NotFound %s, got %v", CodeNotFound, err)
	}
	if err := s.Delete(ctx, id); err != nil {
		t.Fatalf("deleting a missing blob: %v", err)
	}
	if _, _, err := s.Open(ctx, "never-stored"); apierr.KindOf(err) != apierr.NotFound {
		t.Fatalf("open of a blob never stored: want NotFound, got %v", err)
	}
}

// A 20 MB original (a large phone photo) goes up in one PUT and comes back intact.
func TestS3LargeObject(t *testing.T) {
	ctx := context.Background()
	s := newTestS3(t, s3Config(t))
	data := make([]byte, 20<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "large", data); err != nil {
		t.Fatal(err)
	}
	got, size := readBlob(t, s, "large")
	if size != int64(len(data)) || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("20 MB round trip: size %d, %d bytes read, equal=%v", size, len(got), bytes.Equal(got, data))
	}
}

// The secret comes from a mounted file (a Kubernetes Secret) and wins over secret_key.
func TestS3SecretKeyFile(t *testing.T) {
	cfg := s3Config(t)
	file := filepath.Join(t.TempDir(), "secret_key")
	if err := os.WriteFile(file, []byte(cfg.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.SecretKey, cfg.SecretKeyFile = "not-the-secret", file
	s := newTestS3(t, cfg)
	if err := s.Put(context.Background(), "x", []byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestS3WrongCredentials(t *testing.T) {
	for name, mutate := range map[string]func(*S3Config){
		"secret key": func(c *S3Config) { c.SecretKey = "wrong" + c.SecretKey },
		"access key": func(c *S3Config) { c.AccessKey = "tusou-unknown" },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := s3Config(t)
			mutate(&cfg)
			_, err := NewS3(context.Background(), cfg)
			t.Logf("start-up error: %v", err)
			e := apierr.As(err)
			if e == nil || e.Code != CodeCredentials {
				t.Fatalf("want %s, got %v", CodeCredentials, err)
			}
			for _, want := range []string{"blobs.s3.access_key", "secret_key", "refused the gateway's credentials"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestS3MissingBucket(t *testing.T) {
	cfg := s3Config(t)
	cfg.Bucket = "tusou-missing-" + randomHex(t, 4)
	_, err := NewS3(context.Background(), cfg)
	t.Logf("start-up error: %v", err)
	if err == nil {
		t.Fatal("no error for a missing bucket")
	}
	for _, want := range []string{"blobs.s3.bucket", cfg.Bucket, "does not exist"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// closedAddr is a local address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// An object store that cannot be reached: start-up fails naming the
// endpoint, and every operation is a 503 with a retry hint.
func TestS3Down(t *testing.T) {
	cfg := s3Config(t)
	cfg.Endpoint = closedAddr(t)
	_, err := NewS3(context.Background(), cfg)
	t.Logf("start-up error: %v", err)
	if e := apierr.As(err); e == nil || e.Kind != apierr.Unavailable || e.RetryAfter <= 0 || !strings.Contains(err.Error(), "blobs.s3.endpoint") {
		t.Fatalf("start-up: want Unavailable with RetryAfter naming blobs.s3.endpoint, got %v", err)
	}

	s, err := newS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, _, openErr := s.Open(ctx, "x")
	for op, err := range map[string]error{
		"put": s.Put(ctx, "x", []byte("x")), "open": openErr, "delete": s.Delete(ctx, "x"),
	} {
		e := apierr.As(err)
		if e == nil || e.Kind != apierr.Unavailable || e.Code != CodeUnavailable || e.RetryAfter <= 0 {
			t.Errorf("%s: want Unavailable %s with RetryAfter, got %v", op, CodeUnavailable, err)
		}
	}
}
