// Package config is tusou's one typed configuration: defaults in code, a
// strict YAML file, TUSOU_* environment variables and --set flags, validated
// all at once with messages that name the setting. Component packages own
// their sections (triton.Config, esproxy.Config, preprocess.Config); this
// package composes them and owns the gateway's own settings. Nothing else in
// tusou reads configuration.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tusou/tusou/blobstore"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/esproxy/sidecar"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/triton"
)

// Config is the whole configuration of `tusou serve`.
type Config struct {
	Server        Server            `yaml:"server"`
	Log           Log               `yaml:"log"`
	Auth          Auth              `yaml:"auth"`
	Search        Search            `yaml:"search"`
	Text          Text              `yaml:"text"`
	Blobs         Blobs             `yaml:"blobs"`
	Decode        Decode            `yaml:"decode"`
	Preprocess    preprocess.Config `yaml:"preprocess"`
	Triton        triton.Config     `yaml:"triton"`
	Elasticsearch esproxy.Config    `yaml:"elasticsearch"`
	Sidecar       sidecar.Config    `yaml:"sidecar"`
	Models        Models            `yaml:"models"`
}

// Server holds the HTTP listener's settings.
type Server struct {
	Listen            string        `yaml:"listen" doc:"address the REST API listens on"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout" doc:"time allowed to read request headers (slowloris guard)"`
	ReadTimeout       time.Duration `yaml:"read_timeout" doc:"time allowed to read a whole request, body included; large uploads on slow links need more"`
	WriteTimeout      time.Duration `yaml:"write_timeout" doc:"time allowed to write a response"`
	IdleTimeout       time.Duration `yaml:"idle_timeout" doc:"keep-alive idle timeout"`
	RequestTimeout    time.Duration `yaml:"request_timeout" doc:"deadline for handling one request; it propagates to Triton and Elasticsearch calls"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout" doc:"on SIGTERM, how long in-flight requests and batches may take to drain; keep below the pod's terminationGracePeriodSeconds"`
	MaxBodyBytes      int64         `yaml:"max_body_bytes" doc:"largest request body accepted; bigger bodies get 413 without being read"`
	MaxFiles          int           `yaml:"max_files" doc:"most image files in one ingest request"`
	MaxMetadataBytes  int64         `yaml:"max_metadata_bytes" doc:"largest metadata JSON object accepted per image"`
	MemoryBudgetBytes int64         `yaml:"memory_budget_bytes" doc:"request bytes the whole process holds at once, REST API and sidecar together: bodies (charged from Content-Length before they are read) and images being decoded; a request that does not fit gets 429 with Retry-After. Unless GOMEMLIMIT is set, the Go heap's soft limit is this plus 128 MiB. At least max_body_bytes and sidecar.max_body_bytes"`
	AllowedOrigins    []string      `yaml:"allowed_origins" doc:"browser origins (scheme://host[:port], e.g. https://photos.example.com) whose pages may send state-changing /v1 requests (ingest, delete, search); other cross-site browser requests get 403, while same-origin pages (the /ui/ search page) and non-browser clients (no Origin or Sec-Fetch-Site header) always pass"`
	DebugListen       string        `yaml:"debug_listen" doc:"address for Go's /debug/pprof profiles (heap, goroutines, CPU), e.g. 127.0.0.1:6060; empty turns it off. Never expose it publicly"`
}

// Log holds logging settings.
type Log struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error"`
	Format string `yaml:"format" doc:"json (production) or console (humans)"`
}

// Auth holds API-key authentication. It is off when no key is configured.
type Auth struct {
	APIKeys   []string `yaml:"api_keys" doc:"accepted API keys (comma-separated in the environment); empty turns auth off. Clients send 'Authorization: ApiKey <key>' or 'X-API-Key: <key>'"`
	AdminKeys []string `yaml:"admin_keys" doc:"keys for the admin API (/v1/admin: model generations, switch, rollback, prune), sent like api_keys; separate from api_keys so apps cannot switch models. Empty turns the admin API off (403)"`
}

// Search holds kNN request limits and defaults. The default num_candidates
// is elasticsearch.num_candidates_factor: one setting, where the kNN request
// is built.
type Search struct {
	DefaultK               int     `yaml:"default_k" doc:"k when a search does not say"`
	MaxK                   int     `yaml:"max_k" doc:"largest k accepted"`
	MaxNumCandidates       int     `yaml:"max_num_candidates" doc:"largest num_candidates accepted (Elasticsearch's own limit is 10000)"`
	MaxTextBytes           int     `yaml:"max_text_bytes" doc:"largest text query in bytes; longer texts are refused with 413"`
	MaxFilterKeys          int     `yaml:"max_filter_keys" doc:"most metadata keys in one search filter"`
	NearDuplicateThreshold float32 `yaml:"near_duplicate_threshold" doc:"cosine similarity (exact, see elasticsearch.rescore_oversample) at or above which POST /v1/images?near_duplicates=true reports another image as a near-duplicate"`
}

// Text holds the text tower's gateway-side settings.
type Text struct {
	TokenizerPath string `yaml:"tokenizer_path" doc:"HuggingFace tokenizer.json matching the clip_text model (empty: model_repository/clip_text/tokenizer.json, which must then exist; start-up fails otherwise). Texts are truncated to triton.text_model.max_seq_len tokens"`
}

// Blobs holds where original image bytes are kept: for GET
// /v1/images/{id}/content, and to re-embed every image for a new model.
type Blobs struct {
	Backend string             `yaml:"backend" doc:"where originals are kept: dir (a local folder, blobs.dir) or s3 (an S3-compatible object store, blobs.s3; production)"`
	Dir     string             `yaml:"dir" doc:"folder for original image bytes (content-addressed) when backend is dir; empty disables storing originals"`
	S3      blobstore.S3Config `yaml:"s3"`
}

func (b Blobs) validate() error {
	switch b.Backend {
	case blobstore.BackendDir:
		return nil
	case blobstore.BackendS3:
		return errors.Join(prefixErrors("s3", b.S3.Validate())...)
	}
	return fmt.Errorf("backend: want %s or %s, got %q", blobstore.BackendDir, blobstore.BackendS3, b.Backend)
}

// Decode bounds CPU-heavy image decoding.
type Decode struct {
	Workers   int `yaml:"workers" doc:"images decoded at once; 0 means one per CPU (GOMAXPROCS), since decoding is CPU-bound"`
	QueueSize int `yaml:"queue_size" doc:"images waiting for a decode worker before new ones are refused with 429; each waiting image holds its upload in memory"`
}

// Default returns the configuration that works against `make up`.
func Default() *Config {
	return &Config{
		Server: Server{
			Listen:            ":8080",
			ReadHeaderTimeout: 10 * time.Second,
			// 32 MiB at 10 Mbit/s takes ~27 s; 60 s leaves room for slow clients.
			ReadTimeout:     60 * time.Second,
			WriteTimeout:    60 * time.Second,
			IdleTimeout:     120 * time.Second,
			RequestTimeout:  30 * time.Second,
			ShutdownTimeout: 25 * time.Second,
			// One image at preprocess.max_bytes (32 MiB) plus multipart framing and
			// metadata; batches larger than this should be split by the client.
			MaxBodyBytes:     48 << 20,
			MaxFiles:         64,
			MaxMetadataBytes: 16 << 10,
			// 256 MiB in flight: 33 uploads of a 12 MP phone photo (7.7 MB), or
			// 5 bodies at max_body_bytes, or two 100 MiB sidecar bulks. With the
			// ~50 MB a gateway holds at rest and the 128 MiB of heap headroom
			// the GC gets (GOMEMLIMIT = budget + 128 MiB), the process stays
			// under ~400 MB: a 512 MiB container limit is safe.
			MemoryBudgetBytes: 256 << 20,
		},
		Log: Log{Level: "info", Format: "json"},
		Search: Search{
			DefaultK:         10,
			MaxK:             1000,
			MaxNumCandidates: 10000,
			MaxTextBytes:     4096,
			MaxFilterKeys:    16,
			// With CLIP ViT-B/32, re-encodes, resizes and light crops of one
			// photo score about 0.95-0.99 against the original, while distinct
			// photos of a similar scene rarely pass 0.93: 0.95 reports the
			// former and few of the latter. Tiny test models need more.
			NearDuplicateThreshold: 0.95,
		},
		Blobs: Blobs{Backend: blobstore.BackendDir, Dir: ".local/blobs", S3: blobstore.DefaultS3Config()},
		// 256 waiting uploads of typical 2-5 MB photos is ~1 GB at worst;
		// more than that is a burst the GPU tier could not absorb anyway.
		Decode:        Decode{Workers: 0, QueueSize: 256},
		Preprocess:    preprocess.DefaultConfig(),
		Triton:        triton.DefaultConfig(),
		Elasticsearch: esproxy.DefaultConfig(),
		Sidecar:       sidecar.DefaultConfig(),
		Models: Models{
			PollInterval: time.Second,
			// Many missed polls in a row, yet short enough that a switch
			// started meanwhile is noticed long before its backfill ends.
			MaxStaleness: 15 * time.Second,
			Backfill:     Backfill{Workers: 16, PageSize: 500, MaxErrors: 100},
		},
	}
}

// Validate checks every setting and reports all problems at once.
func (c *Config) Validate() error {
	var errs []error
	errs = append(errs, prefixErrors("server", c.Server.validate())...)
	errs = append(errs, prefixErrors("log", c.Log.validate())...)
	errs = append(errs, prefixErrors("auth", c.Auth.validate())...)
	errs = append(errs, prefixErrors("search", c.Search.validate())...)
	errs = append(errs, prefixErrors("text", c.Text.validate())...)
	errs = append(errs, prefixErrors("blobs", c.Blobs.validate())...)
	errs = append(errs, prefixErrors("decode", c.Decode.validate())...)
	errs = append(errs, prefixErrors("preprocess", c.Preprocess.Validate())...)
	errs = append(errs, prefixErrors("triton", c.Triton.Validate())...)
	errs = append(errs, prefixErrors("elasticsearch", c.Elasticsearch.Validate())...)
	errs = append(errs, prefixErrors("sidecar", c.Sidecar.Validate())...)
	errs = append(errs, c.validateModels()...)
	if c.Sidecar.Enabled && c.Server.MemoryBudgetBytes < c.Sidecar.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("server.memory_budget_bytes: %d is smaller than sidecar.max_body_bytes %d, so the largest sidecar body could never be admitted", c.Server.MemoryBudgetBytes, c.Sidecar.MaxBodyBytes))
	}
	if c.Sidecar.Enabled && c.Sidecar.Listen == c.Server.Listen {
		errs = append(errs, fmt.Errorf("sidecar.listen: %q is also server.listen", c.Sidecar.Listen))
	}
	if c.Preprocess.MaxBytes > c.Server.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("preprocess.max_bytes: %d is larger than server.max_body_bytes %d, so the image limit could never be reached", c.Preprocess.MaxBytes, c.Server.MaxBodyBytes))
	}
	return errors.Join(errs...)
}

func positive(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s: must be > 0, got %s", name, d)
	}
	return nil
}

func (s Server) validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: want host:port such as :8080, got %q", s.Listen))
	}
	for name, d := range map[string]time.Duration{
		"read_header_timeout": s.ReadHeaderTimeout, "read_timeout": s.ReadTimeout,
		"write_timeout": s.WriteTimeout, "idle_timeout": s.IdleTimeout,
		"request_timeout": s.RequestTimeout, "shutdown_timeout": s.ShutdownTimeout,
	} {
		errs = append(errs, positive(name, d))
	}
	if s.MaxBodyBytes < 1<<10 {
		errs = append(errs, fmt.Errorf("max_body_bytes: must be at least 1024, got %d", s.MaxBodyBytes))
	}
	if s.MaxFiles < 1 || s.MaxFiles > 1000 {
		errs = append(errs, fmt.Errorf("max_files: must be 1..1000, got %d", s.MaxFiles))
	}
	if s.MaxMetadataBytes < 2 {
		errs = append(errs, fmt.Errorf("max_metadata_bytes: must be at least 2, got %d", s.MaxMetadataBytes))
	}
	if s.MemoryBudgetBytes < s.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("memory_budget_bytes: must be at least max_body_bytes (%d) so the largest body can be admitted, got %d", s.MaxBodyBytes, s.MemoryBudgetBytes))
	}
	for i, o := range s.AllowedOrigins {
		// The same check the gateway's guard applies when it loads them.
		if err := http.NewCrossOriginProtection().AddTrustedOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("allowed_origins[%d]: want scheme://host[:port] with no path, got %q", i, o))
		}
	}
	if s.DebugListen != "" {
		if _, _, err := net.SplitHostPort(s.DebugListen); err != nil {
			errs = append(errs, fmt.Errorf("debug_listen: want host:port such as 127.0.0.1:6060, or empty, got %q", s.DebugListen))
		}
	}
	return sortedJoin(errs)
}

func (l Log) validate() error {
	var errs []error
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("level: want debug, info, warn or error, got %q", l.Level))
	}
	if l.Format != "json" && l.Format != "console" {
		errs = append(errs, fmt.Errorf("format: want json or console, got %q", l.Format))
	}
	return errors.Join(errs...)
}

func (a Auth) validate() error {
	var errs []error
	for name, keys := range map[string][]string{"api_keys": a.APIKeys, "admin_keys": a.AdminKeys} {
		for i, k := range keys {
			if len(k) < 16 {
				errs = append(errs, fmt.Errorf("%s[%d]: keys must be at least 16 characters, got %d", name, i, len(k)))
			}
			if strings.TrimSpace(k) != k {
				errs = append(errs, fmt.Errorf("%s[%d]: has leading or trailing whitespace", name, i))
			}
		}
	}
	for _, k := range a.AdminKeys {
		if slices.Contains(a.APIKeys, k) {
			errs = append(errs, fmt.Errorf("admin_keys: a key is also in api_keys; an app key must not switch models"))
			break
		}
	}
	return sortedJoin(errs)
}

func (s Search) validate() error {
	var errs []error
	if s.MaxK < 1 || s.MaxK > 10000 {
		errs = append(errs, fmt.Errorf("max_k: must be 1..10000, got %d", s.MaxK))
	}
	if s.DefaultK < 1 || s.DefaultK > s.MaxK {
		errs = append(errs, fmt.Errorf("default_k: must be 1..max_k (%d), got %d", s.MaxK, s.DefaultK))
	}
	if s.MaxNumCandidates < s.MaxK || s.MaxNumCandidates > 10000 {
		errs = append(errs, fmt.Errorf("max_num_candidates: must be max_k..10000, got %d", s.MaxNumCandidates))
	}
	if s.MaxTextBytes < 1 {
		errs = append(errs, fmt.Errorf("max_text_bytes: must be >= 1, got %d", s.MaxTextBytes))
	}
	if s.MaxFilterKeys < 0 {
		errs = append(errs, fmt.Errorf("max_filter_keys: must be >= 0, got %d", s.MaxFilterKeys))
	}
	if t := s.NearDuplicateThreshold; !(t > 0 && t <= 1) {
		errs = append(errs, fmt.Errorf("near_duplicate_threshold: must be a cosine in (0, 1], got %g", t))
	}
	return errors.Join(errs...)
}

func (d Decode) validate() error {
	var errs []error
	if d.Workers < 0 || d.Workers > 1024 {
		errs = append(errs, fmt.Errorf("workers: must be 0 (one per CPU) .. 1024, got %d", d.Workers))
	}
	if d.QueueSize < 0 {
		errs = append(errs, fmt.Errorf("queue_size: must be >= 0, got %d", d.QueueSize))
	}
	return errors.Join(errs...)
}

func (t Text) validate() error {
	if t.TokenizerPath != "" && !strings.HasSuffix(t.TokenizerPath, ".json") {
		return fmt.Errorf("tokenizer_path: want a HuggingFace tokenizer.json file, got %q", t.TokenizerPath)
	}
	return nil
}

// sortedJoin joins errors, dropping nils, in a stable order (map iteration above is random).
func sortedJoin(errs []error) error {
	var kept []error
	for _, e := range errs {
		if e != nil {
			kept = append(kept, e)
		}
	}
	for i := 1; i < len(kept); i++ {
		for j := i; j > 0 && kept[j].Error() < kept[j-1].Error(); j-- {
			kept[j], kept[j-1] = kept[j-1], kept[j]
		}
	}
	return errors.Join(kept...)
}
