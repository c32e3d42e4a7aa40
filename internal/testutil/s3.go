package testutil

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// S3 is the local stack's S3-compatible object store (S3Proxy): `make up`
// starts it (deploy/local/s3.sh) and writes these values to .local/s3.env.
type S3 struct {
	Endpoint  string // host:port, plain HTTP: 127.0.0.1:9000
	Bucket    string // created by the script: tusou-originals
	Region    string // the region requests are signed for
	AccessKey string
	SecretKey string
}

// LoadS3 reads the object store's settings from TUSOU_S3_ENV, by default
// .local/s3.env in the repository root.
func LoadS3() (S3, error) {
	path := os.Getenv("TUSOU_S3_ENV")
	if path == "" {
		path = filepath.Join(Root(), ".local", "s3.env")
	}
	kv, err := readEnvFile(path)
	if err != nil {
		return S3{}, fmt.Errorf("the local object store is not set up (make up starts it): %w", err)
	}
	s := S3{
		Endpoint: kv["TUSOU_BLOBS_S3_ENDPOINT"], Bucket: kv["TUSOU_BLOBS_S3_BUCKET"], Region: kv["TUSOU_BLOBS_S3_REGION"],
		AccessKey: kv["TUSOU_BLOBS_S3_ACCESS_KEY"], SecretKey: kv["TUSOU_BLOBS_S3_SECRET_KEY"],
	}
	for k, v := range map[string]string{"ENDPOINT": s.Endpoint, "BUCKET": s.Bucket, "REGION": s.Region,
		"ACCESS_KEY": s.AccessKey, "SECRET_KEY": s.SecretKey} {
		if v == "" {
			return S3{}, fmt.Errorf("%s: TUSOU_BLOBS_S3_%s is missing (make up writes it)", path, k)
		}
	}
	return s, nil
}

// readEnvFile reads KEY=value lines, skipping blank lines and # comments.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			kv[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kv, nil
}
