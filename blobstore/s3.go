package blobstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/internal/tlsutil"
)

// S3Config is the blobs.s3 section: an S3-compatible object store (AWS S3,
// MinIO, Ceph RGW, S3Proxy, ...) that keeps the originals.
type S3Config struct {
	// Endpoint is the object store's host or host:port, without a scheme
	// (tls chooses https), e.g. s3.eu-central-1.amazonaws.com or 127.0.0.1:9000.
	Endpoint string `yaml:"endpoint"`
	// Bucket holds the originals. It must exist: the gateway checks it at
	// start-up and never creates buckets (that is the operator's decision,
	// with its retention and access policies).
	Bucket string `yaml:"bucket"`
	// Region is the region requests are signed for; empty asks the store
	// (one extra request per bucket).
	Region string `yaml:"region"`
	// AccessKey is the access key id (set it from a Secret through the
	// environment: TUSOU_BLOBS_S3_ACCESS_KEY).
	AccessKey string `yaml:"access_key"`
	// SecretKey is the secret access key; prefer secret_key_file or the
	// environment (TUSOU_BLOBS_S3_SECRET_KEY) to keeping it in a file of settings.
	SecretKey string `yaml:"secret_key"`
	// SecretKeyFile is a file holding the secret access key (a mounted
	// Kubernetes Secret); it wins over secret_key. Surrounding whitespace is ignored.
	SecretKeyFile string `yaml:"secret_key_file"`
	// TLS talks https to the endpoint.
	TLS bool `yaml:"tls"`
	// CACert is a PEM file with the CA(s) that signed the endpoint's
	// certificate, trusted in addition to the system's (tls only).
	CACert string `yaml:"ca_cert"`
	// Prefix is put before every object key (the key is the prefix plus the
	// hex SHA-256 of the image id), so one bucket can hold other data too.
	Prefix string `yaml:"prefix"`
}

// DefaultS3Config returns the settings that work against `make up`'s S3Proxy
// (credentials aside: they are in .local/s3.env).
func DefaultS3Config() S3Config {
	return S3Config{
		Endpoint: "127.0.0.1:9000",
		Bucket:   "tusou-originals",
		Region:   "us-east-1",
		Prefix:   "originals/",
	}
}

// maxPrefixBytes keeps keys (prefix + 64 hex digits) well under S3's 1024-byte limit.
const maxPrefixBytes = 512

// Validate checks the settings without touching the network or files; the
// messages name the setting relative to this section.
func (c S3Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case c.Endpoint == "":
		bad("endpoint: must be host or host:port of the object store")
	case strings.Contains(c.Endpoint, "://"):
		bad("endpoint: want host or host:port without a scheme (tls chooses https), got %q", c.Endpoint)
	case strings.ContainsAny(c.Endpoint, "/?# "):
		bad("endpoint: want host or host:port, no path, got %q", c.Endpoint)
	}
	if err := s3utils.CheckValidBucketNameStrict(c.Bucket); err != nil {
		bad("bucket: %q is not a valid bucket name: %v", c.Bucket, err)
	}
	if c.AccessKey == "" {
		bad("access_key: must be set (or TUSOU_BLOBS_S3_ACCESS_KEY)")
	}
	if c.SecretKey == "" && c.SecretKeyFile == "" {
		bad("secret_key: set secret_key_file or secret_key (or TUSOU_BLOBS_S3_SECRET_KEY)")
	}
	if c.CACert != "" && !c.TLS {
		bad("ca_cert: only applies with tls: true")
	}
	if strings.HasPrefix(c.Prefix, "/") || len(c.Prefix) > maxPrefixBytes {
		bad("prefix: must not start with / and be at most %d bytes, got %q", maxPrefixBytes, c.Prefix)
	}
	return errors.Join(errs...)
}

// Error codes of the object-store backend, besides the ones Dir shares
// (CodeNotFound, CodeWriteFailed, CodeReadFailed, CodeDeleteFailed).
const (
	// CodeUnavailable is an object store that cannot be reached or answers 5xx.
	CodeUnavailable = "blob_store_unavailable"
	// CodeTimeout is an object store that did not answer before the deadline.
	CodeTimeout = "blob_store_timeout"
	// CodeCanceled is a blob operation the caller gave up on.
	CodeCanceled = "blob_store_canceled"
	// CodeCredentials is the object store refusing the gateway's own keys.
	CodeCredentials = "blob_store_credentials"
	// CodeTLS is a certificate the gateway cannot verify.
	CodeTLS = "blob_store_tls"
	// CodeBucketNotFound is blobs.s3.bucket missing at the object store.
	CodeBucketNotFound = "blob_bucket_not_found"
)

const (
	// unavailableRetryAfter: an object store restart or failover takes seconds.
	unavailableRetryAfter = 5 * time.Second
	// maxRetries bounds minio-go's own retries (default 10, with backoff):
	// an unreachable store fails the request in about a second with 503 and
	// Retry-After instead of holding an upload for many.
	maxRetries = 3
	// startupCheckTimeout bounds the bucket check in NewS3 when the caller's
	// context has no earlier deadline, so a black-holed endpoint cannot hang start-up.
	startupCheckTimeout = 15 * time.Second
)

// S3 stores blobs as objects in one bucket of an S3-compatible store. Keys
// are the prefix plus the SHA-256 of the document id, so client-chosen ids
// never shape a key. Writes are single PUTs: S3 makes them atomic, so
// readers see the old object or the whole new one.
type S3 struct {
	client   *minio.Client
	bucket   string
	prefix   string
	endpoint string
}

// NewS3 connects to the store cfg names and checks that the bucket exists
// and the credentials are accepted, within ctx (and at most
// startupCheckTimeout). Errors name the setting to fix.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	s, err := newS3(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, startupCheckTimeout)
	defer cancel()
	ok, err := s.client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		e := s.classify(ctx, err, CodeReadFailed, "checking the bucket")
		setting := "blobs.s3"
		switch e.Code {
		case CodeUnavailable, CodeTimeout:
			setting = "blobs.s3.endpoint"
		case CodeTLS:
			setting = "blobs.s3.ca_cert"
		case CodeCredentials:
			setting = "blobs.s3.access_key/secret_key"
		}
		return nil, fmt.Errorf("%s: %w", setting, e)
	}
	if !ok {
		return nil, fmt.Errorf("blobs.s3.bucket: bucket %q does not exist at %s (create it first: the gateway never creates buckets)", cfg.Bucket, cfg.Endpoint)
	}
	return s, nil
}

// newS3 builds the client without talking to the store.
func newS3(cfg S3Config) (*S3, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("blobs.s3: %w", err)
	}
	secret := cfg.SecretKey
	if cfg.SecretKeyFile != "" {
		b, err := os.ReadFile(cfg.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("blobs.s3.secret_key_file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
		if secret == "" {
			return nil, fmt.Errorf("blobs.s3.secret_key_file: %s is empty", cfg.SecretKeyFile)
		}
	}
	tr, err := minio.DefaultTransport(cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("blobs.s3: %w", err)
	}
	if cfg.CACert != "" {
		pool, err := tlsutil.LoadCA(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("blobs.s3.ca_cert: %w", err)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, secret, ""),
		Secure:     cfg.TLS,
		Transport:  tr,
		Region:     cfg.Region,
		MaxRetries: maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("blobs.s3.endpoint: %w", err)
	}
	return &S3{client: client, bucket: cfg.Bucket, prefix: cfg.Prefix, endpoint: cfg.Endpoint}, nil
}

// key is the object key of id.
func (s *S3) key(id string) string { return s.prefix + idHash(id) }

// Put stores data under id with one PUT (atomic in S3).
func (s *S3) Put(ctx context.Context, id string, data []byte) error {
	// DisableMultipart: a multipart upload is not atomic until completed and
	// leaves parts behind when it fails; originals are at most
	// server.max_body_bytes, far below the 5 GiB a single PUT allows.
	_, err := s.client.PutObject(ctx, s.bucket, s.key(id), bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true})
	if err != nil {
		return s.classify(ctx, err, CodeWriteFailed, "storing the image")
	}
	return nil
}

// Open returns the blob for id, streamed from the store, and its size. The
// reader seeks with ranged GETs; reads use ctx, so the caller keeps it alive
// while it reads.
func (s *S3) Open(ctx context.Context, id string) (io.ReadSeekCloser, int64, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, s.key(id), minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, s.classify(ctx, err, CodeReadFailed, "reading the image")
	}
	// Stat is a HEAD (the first Read sends the GET): it tells a missing
	// object from a failing store before a caller commits to a response.
	// A HEAD's 404 has no body, so a bucket deleted since NewS3 reads as a
	// missing object here (Put reports it as CodeBucketNotFound).
	st, err := obj.Stat()
	if err != nil {
		obj.Close()
		if r := minio.ToErrorResponse(err); r.StatusCode == http.StatusNotFound {
			return nil, 0, apierr.New(apierr.NotFound, CodeNotFound, "no stored content for image %q", id)
		}
		return nil, 0, s.classify(ctx, err, CodeReadFailed, "reading the image")
	}
	return obj, st.Size, nil
}

// Delete removes the blob for id; a missing blob is not an error (S3
// answers 204 either way).
func (s *S3) Delete(ctx context.Context, id string) error {
	if err := s.client.RemoveObject(ctx, s.bucket, s.key(id), minio.RemoveObjectOptions{}); err != nil {
		return s.classify(ctx, err, CodeDeleteFailed, "deleting the stored image")
	}
	return nil
}

// classify maps a minio-go error to an *apierr.Error. code is the
// operation's code for an answer that fits no other class; what describes
// the operation for messages.
func (s *S3) classify(ctx context.Context, err error, code, what string) *apierr.Error {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return apierr.Wrap(err, apierr.Canceled, CodeCanceled, "%s was canceled", what)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()):
		return apierr.Wrap(err, apierr.Timeout, CodeTimeout, "the object store at %s did not answer in time (%s)", s.endpoint, what)
	case tlsutil.IsCertError(err):
		return apierr.Wrap(err, apierr.BadGateway, CodeTLS,
			"the object store's TLS certificate could not be verified (%s): set blobs.s3.ca_cert to the PEM of the CA that signed it", what)
	}
	r := minio.ToErrorResponse(err)
	switch {
	case r.StatusCode == 0:
		// No S3 answer at all: refused, reset, DNS.
		return apierr.Wrap(err, apierr.Unavailable, CodeUnavailable,
			"the object store at %s is unreachable (%s)", s.endpoint, what).WithRetryAfter(unavailableRetryAfter)
	case r.StatusCode >= 500 || r.StatusCode == http.StatusTooManyRequests:
		return apierr.Wrap(err, apierr.Unavailable, CodeUnavailable,
			"the object store at %s is unavailable (%s): HTTP %d %s", s.endpoint, what, r.StatusCode, r.Code).WithRetryAfter(unavailableRetryAfter)
	case r.Code == minio.NoSuchBucket:
		return apierr.Wrap(err, apierr.BadGateway, CodeBucketNotFound,
			"bucket %q does not exist at %s (blobs.s3.bucket)", s.bucket, s.endpoint)
	case r.StatusCode == http.StatusUnauthorized || r.StatusCode == http.StatusForbidden:
		// The gateway's own keys, not the client's: an operator problem.
		return apierr.Wrap(err, apierr.BadGateway, CodeCredentials,
			"the object store at %s refused the gateway's credentials (%s: HTTP %d %s): check blobs.s3.access_key and blobs.s3.secret_key/secret_key_file and the key's rights on bucket %q",
			s.endpoint, what, r.StatusCode, r.Code, s.bucket)
	}
	return apierr.Wrap(err, apierr.BadGateway, code, "the object store at %s failed %s: HTTP %d %s", s.endpoint, what, r.StatusCode, r.Code)
}
