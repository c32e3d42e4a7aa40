package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tusou/tusou/config/internal/fielddocs"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults must validate: %v", err)
	}
}

// TestBadConfigs loads every testdata/*.bad.yml and expects each line of the
// matching .bad.err file to appear in the error.
func TestBadConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.bad.yml")
	if len(files) == 0 {
		t.Fatal("no bad configs found")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yml") + ".err")
			if err != nil {
				t.Fatal(err)
			}
			_, err = Load(f, nil, nil)
			if err == nil {
				t.Fatal("loaded without error")
			}
			for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
				if !strings.Contains(err.Error(), line) {
					t.Errorf("error lacks %q:\n%v", line, err)
				}
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	env := []string{"TUSOU_SERVER_REQUEST_TIMEOUT=7s", "TUSOU_AUTH_API_KEYS=aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb", "PATH=/bin"}
	cfg, err := Load("testdata/good.yml", env, []string{"log.level=warn"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != "127.0.0.1:9999" {
		t.Errorf("file value lost: listen=%q", cfg.Server.Listen)
	}
	if cfg.Server.RequestTimeout != 7*time.Second {
		t.Errorf("env must override file: request_timeout=%s", cfg.Server.RequestTimeout)
	}
	if len(cfg.Auth.APIKeys) != 2 || cfg.Auth.APIKeys[1] != "bbbbbbbbbbbbbbbb" {
		t.Errorf("env list not split: %v", cfg.Auth.APIKeys)
	}
	if cfg.Log.Level != "warn" {
		t.Errorf("--set must override file: level=%q", cfg.Log.Level)
	}
	if cfg.Triton.GRPCAddr != "triton:8001" || cfg.Elasticsearch.Index != "photos" {
		t.Errorf("component sections not loaded: %q %q", cfg.Triton.GRPCAddr, cfg.Elasticsearch.Index)
	}
	if cfg.Server.MaxFiles != Default().Server.MaxFiles {
		t.Errorf("unset values must keep defaults")
	}
}

func TestEnvErrorsNameTheVariable(t *testing.T) {
	_, err := Load("", []string{"TUSOU_SERVER_MAX_FILES=many", "TUSOU_SERVR_LISTEN=:1"}, nil)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"TUSOU_SERVER_MAX_FILES (server.max_files): want an integer", "TUSOU_SERVR_LISTEN: unknown setting"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if _, err := Load("", nil, []string{"nope.x=1"}); err == nil || !strings.Contains(err.Error(), "--set nope.x: unknown setting") {
		t.Errorf("unknown --set: %v", err)
	}
}

// The object store's keys come from a Secret through the environment (k8s
// prod overlay); with backend dir the s3 section is not checked.
func TestBlobsS3FromEnvironment(t *testing.T) {
	env := []string{"TUSOU_BLOBS_BACKEND=s3", "TUSOU_BLOBS_S3_ENDPOINT=minio.storage:9000", "TUSOU_BLOBS_S3_TLS=true",
		"TUSOU_BLOBS_S3_ACCESS_KEY=AKIAEXAMPLE", "TUSOU_BLOBS_S3_SECRET_KEY=from-a-secret"}
	cfg, err := Load("", env, nil)
	if err != nil {
		t.Fatal(err)
	}
	s3 := cfg.Blobs.S3
	if cfg.Blobs.Backend != "s3" || s3.Endpoint != "minio.storage:9000" || !s3.TLS || s3.AccessKey != "AKIAEXAMPLE" ||
		s3.SecretKey != "from-a-secret" || s3.Bucket != "tusou-originals" || s3.Prefix != "originals/" {
		t.Fatalf("blobs from the environment: %+v", cfg.Blobs)
	}
	if _, err := Load("", []string{"TUSOU_BLOBS_S3_ENDPOINT=http://x"}, nil); err != nil {
		t.Fatalf("backend dir must not check blobs.s3: %v", err)
	}
	if _, err := Load("", []string{"TUSOU_BLOBS_BACKEND=s3"}, nil); err == nil || !strings.Contains(err.Error(), "blobs.s3.access_key: must be set") {
		t.Fatalf("backend s3 without keys: %v", err)
	}
}

func TestEveryFieldHasEnvAndDoc(t *testing.T) {
	seen := map[string]string{}
	for _, f := range Fields(Default()) {
		if other, dup := seen[f.Env]; dup {
			t.Errorf("%s and %s share the variable %s", f.Path, other, f.Env)
		}
		seen[f.Env] = f.Path
		if strings.TrimSpace(f.Doc) == "" {
			t.Errorf("%s has no documentation", f.Path)
		}
	}
}

// TestReferenceIsCurrent fails when docs/configuration.md is stale; run
// `make docs` to regenerate it.
func TestReferenceIsCurrent(t *testing.T) {
	want, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatalf("%v (run make docs)", err)
	}
	if string(want) != Reference() {
		t.Fatal("docs/configuration.md is out of date: run `make docs`")
	}
}

// TestFieldDocsAreCurrent fails when fielddocs_gen.go is stale (make docs).
func TestFieldDocsAreCurrent(t *testing.T) {
	dirs := map[string]string{}
	for dir, pkg := range fielddocs.Sources {
		dirs[filepath.Join("..", dir)] = pkg
	}
	docs, err := fielddocs.Extract(dirs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("fielddocs_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(fielddocs.Render(docs)) {
		t.Fatal("config/fielddocs_gen.go is out of date: run `make docs`")
	}
}
