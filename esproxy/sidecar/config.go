package sidecar

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// Config is the sidecar section of the tusou configuration. The upstream
// Elasticsearch addresses, credentials and CA come from the elasticsearch
// section (esproxy.Config); this section only says what the sidecar listens
// on, what it lets through and how it enriches.
type Config struct {
	Enabled bool   `yaml:"enabled" doc:"serve the Elasticsearch-compatible API on listen"`
	Listen  string `yaml:"listen" doc:"address the Elasticsearch-compatible API listens on (Elasticsearch itself uses 9200)"`
	// MaxBodyBytes bounds every request body after decompression.
	MaxBodyBytes int64 `yaml:"max_body_bytes" doc:"largest request body accepted, after gzip/deflate decoding; larger bodies get 413. Bulk bodies are held until their images are embedded, so this also bounds the memory of one request"`
	// RequestTimeout bounds one request, upstream call included.
	RequestTimeout time.Duration `yaml:"request_timeout" doc:"deadline for one request: embedding its images and the Elasticsearch call"`
	// EmbedConcurrency bounds embeddings in flight over all requests.
	EmbedConcurrency int `yaml:"embed_concurrency" doc:"images and texts embedded at once over all sidecar requests; a bulk waits for free slots instead of failing, so keep it at or above the Triton batch size to fill batches"`
	// Credentials says which Elasticsearch credentials upstream calls carry.
	Credentials string `yaml:"credentials" doc:"forward: pass the client's Authorization header on (Elasticsearch checks it, and authenticates the client before any inference); replace: admit clients by sidecar.api_keys and call Elasticsearch with elasticsearch.username/password or api_key (every client gets the gateway's rights, limited by allow; run-as and product-origin headers are dropped)"`
	// TextModelID and ImageModelID are the model_id values a
	// query_vector_builder must name for the sidecar to answer it.
	TextModelID  string `yaml:"text_model_id" doc:"model_id of text_embedding query_vector_builders the sidecar computes; other model ids pass through to Elasticsearch's own inference"`
	ImageModelID string `yaml:"image_model_id" doc:"model_id of image_embedding query_vector_builders (an empty model_id is accepted too)"`
	// Rules say which document fields are embedded, per index pattern.
	Rules []Rule `yaml:"rules" doc:"document enrichment rules: {index: glob, field: input field, kind: image|image_url|text, target: vector field, keep: keep the input field}; every rule whose index matches applies (YAML only)"`
	// Allow lists operations refused by default that this deployment lets through.
	Allow []string `yaml:"allow" doc:"extra operations let through, by name (e.g. indices.delete, delete_by_query, reindex, indices.put_mapping, cat, snapshot; * allows every operation of the route table). Refused operations, and paths the route table does not know, get a 403 security_exception naming the operation"`
	// URLFetch controls image_url fields and url image query builders.
	URLFetch URLFetch `yaml:"url_fetch"`
	// AllowCompatibleWith7 lets v7-compatible media types through.
	AllowCompatibleWith7 bool `yaml:"allow_compatible_with_7" doc:"accept Content-Type/Accept application/vnd.elasticsearch+json;compatible-with=7 (Elasticsearch then also routes typed v7 paths); off, such requests get 403"`
	// WriteIndices are the indices listener clients may change.
	WriteIndices []string `yaml:"write_indices" doc:"index names or globs (* or photos-*) that clients may write: documents, bulk items, index creation, mappings, settings, deletes. Wildcard targets must fall inside one glob"`
	// WriteGatewayIndex lifts the read-only protection of the gateway's index.
	WriteGatewayIndex bool `yaml:"write_gateway_index" doc:"let clients write the gateway's own alias (elasticsearch.index) and its concrete indices (<alias>-*); off, they are read-only through the sidecar (searches and gets pass)"`
	// CreateIndex limits create-index (clone, shrink, split, rollover) bodies.
	CreateIndex CreateIndex `yaml:"create_index"`
	// MaxQueryBuilders bounds the query_vector_builders of one request.
	MaxQueryBuilders int `yaml:"max_query_builders" doc:"most query_vector_builders the sidecar computes for one _search or _msearch request; more get 400 before any is computed"`
	// MaxInflightBytes bounds the request bodies held at once.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes" doc:"request body bytes (after decoding) the sidecar holds at once over all requests; a request that would go over gets 429 with Retry-After. At least max_body_bytes"`
	// APIKeys admit clients in replace mode.
	APIKeys []string `yaml:"api_keys" doc:"keys a client must send as 'Authorization: ApiKey <key>' (comma-separated in the environment); required with credentials: replace, where they are the only way in. In forward mode Elasticsearch checks the client's own credentials before any inference"`
}

// CreateIndex says what create-index bodies may hold.
type CreateIndex struct {
	// Settings are the index settings a client may set.
	Settings []string `yaml:"settings" doc:"index settings a create-index body may set, as names or globs without the index. prefix (analysis.* covers analyzers); anything else gets 403"`
	// Aliases are the aliases a client may attach at creation.
	Aliases []string `yaml:"aliases" doc:"alias names or globs a create-index body (or an allowed alias call) may attach; empty refuses every alias. The gateway's own alias is always refused"`
}

// Rule maps an input field of documents in matching indices to a vector field.
type Rule struct {
	// Index is a glob over the index name the request names ("*" matches
	// every index, "photos-*" a prefix). Aliases and data streams match by
	// the name the client writes to.
	Index string `yaml:"index"`
	// Field is the top-level document field holding the input.
	Field string `yaml:"field"`
	// Kind is image (base64 string, optionally a data: URI), image_url (an
	// http(s) URL fetched under url_fetch) or text.
	Kind string `yaml:"kind"`
	// Target is the top-level field that receives the unit vector; a value
	// the client sent in it is replaced.
	Target string `yaml:"target"`
	// Keep stores the input field as well. Off by default: a base64 image is
	// bytes the index should not carry (33% larger than the file, in every
	// replica and snapshot).
	Keep bool `yaml:"keep"`
}

// URLFetch bounds image_url fetching. Off by default: fetching URLs chosen by
// clients from inside the network is a server-side request forgery risk, so
// it needs an explicit host allow-list.
type URLFetch struct {
	Enabled bool `yaml:"enabled" doc:"fetch image_url fields and url image queries; off, documents with an image_url rule field fail with 400"`
	// Schemes accepted; https only by default.
	Schemes []string `yaml:"schemes" doc:"URL schemes fetched (http, https)"`
	// Hosts are exact host names or *.suffix wildcards.
	Hosts []string `yaml:"hosts" doc:"host names fetched: exact names or *.example.com (any subdomain). Addresses are resolved first and every address must be public: loopback, private, link-local, CGNAT and multicast addresses are always refused, on redirects too"`
	// MaxBytes bounds one fetched image.
	MaxBytes int64 `yaml:"max_bytes" doc:"largest image fetched; longer bodies fail the document with 400"`
	// Timeout bounds one fetch, redirects included.
	Timeout time.Duration `yaml:"timeout" doc:"deadline for fetching one image, redirects included"`
	// MaxRedirects followed per fetch; each target is checked again.
	MaxRedirects int `yaml:"max_redirects" doc:"redirects followed per fetch (0 disables them); each hop is checked against schemes and hosts again"`
}

// Rule kinds.
const (
	KindImage    = "image"
	KindImageURL = "image_url"
	KindText     = "text"
)

// Credential modes.
const (
	CredentialsForward = "forward"
	CredentialsReplace = "replace"
)

// DefaultConfig returns the defaults; the comments give the reasons.
func DefaultConfig() Config {
	return Config{
		Enabled: true,
		// Next to Elasticsearch's 9200, so pointing a client at the sidecar is a port change.
		Listen: ":9201",
		// Elasticsearch's own http.max_content_length: a client whose bulks
		// Elasticsearch accepts has them accepted here too.
		MaxBodyBytes: 100 << 20,
		// A 100 MB bulk of images at a few hundred images per second takes
		// tens of seconds; Elasticsearch clients default to similar timeouts.
		RequestTimeout: 120 * time.Second,
		// Two batches of 64 (triton's default max batch size): one computing
		// on the GPU while the next one is decoded and queued.
		EmbedConcurrency: 128,
		// Elasticsearch keeps checking each client's own credentials.
		Credentials:  CredentialsForward,
		TextModelID:  "clip_text",
		ImageModelID: "clip_image",
		Rules: []Rule{
			{Index: "*", Field: "image_base64", Kind: KindImage, Target: "image_embedding"},
			{Index: "*", Field: "image_url", Kind: KindImageURL, Target: "image_embedding"},
		},
		URLFetch: URLFetch{
			Enabled: false,
			Schemes: []string{"https"},
			// 16 MiB covers camera JPEGs; bigger images are rarely worth a
			// 224x224 embedding and cost memory while in flight.
			MaxBytes: 16 << 20,
			// Slow origins should not hold a bulk (and its embed slots) for long.
			Timeout:      10 * time.Second,
			MaxRedirects: 3,
		},
		// Clients own the indices they create; the gateway's index is
		// protected separately (WriteGatewayIndex).
		WriteIndices: []string{"*"},
		CreateIndex: CreateIndex{
			// Shape and analysis, nothing that runs pipelines, blocks
			// writes, moves shards or hides the index.
			Settings: []string{"number_of_shards", "number_of_replicas", "auto_expand_replicas", "refresh_interval",
				"max_result_window", "analysis.*", "similarity.*", "sort.*", "mapping.total_fields.limit"},
		},
		// A search carries a handful of kNN sections; an msearch of a few
		// hundred is a large batch. 1024 embeddings are seconds of GPU time.
		MaxQueryBuilders: 1024,
		// Four default-sized bulks at once: memory stays bounded while
		// parallel bulk helpers (4 workers by default) keep streaming.
		MaxInflightBytes: 400 << 20,
	}
}

var (
	fieldRe  = regexp.MustCompile(`^[A-Za-z0-9_@][A-Za-z0-9_@.\-]*$`)
	opNameRe = regexp.MustCompile(`^[a-z][a-z0-9_.]*$`)
	hostRe   = regexp.MustCompile(`^(\*\.)?[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*$`)
)

// Validate reports every bad setting at once, each named by its yaml key.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen: want host:port such as :9201, got %q", c.Listen)
	}
	if c.MaxBodyBytes < 1<<10 {
		bad("max_body_bytes: must be at least 1024, got %d", c.MaxBodyBytes)
	}
	if c.RequestTimeout <= 0 {
		bad("request_timeout: must be > 0, got %s", c.RequestTimeout)
	}
	if c.EmbedConcurrency < 1 || c.EmbedConcurrency > 4096 {
		bad("embed_concurrency: must be in [1, 4096], got %d", c.EmbedConcurrency)
	}
	if c.Credentials != CredentialsForward && c.Credentials != CredentialsReplace {
		bad("credentials: must be forward or replace, got %q", c.Credentials)
	}
	if c.TextModelID == "" {
		bad("text_model_id: must not be empty")
	}
	if c.ImageModelID == "" {
		bad("image_model_id: must not be empty")
	}
	seen := map[[2]string]int{}
	for i, r := range c.Rules {
		p := fmt.Sprintf("rules[%d]", i)
		if r.Index == "" || strings.ContainsAny(r.Index, `\/"<>| ,#`) {
			bad("%s.index: want an index name or glob such as * or photos-*, got %q", p, r.Index)
		}
		if !fieldRe.MatchString(r.Field) {
			bad("%s.field: want a field name matching %s, got %q", p, fieldRe, r.Field)
		}
		if !fieldRe.MatchString(r.Target) {
			bad("%s.target: want a field name matching %s, got %q", p, fieldRe, r.Target)
		} else if r.Target == r.Field {
			bad("%s.target: must differ from field %q", p, r.Field)
		}
		switch r.Kind {
		case KindImage, KindImageURL, KindText:
		default:
			bad("%s.kind: must be image, image_url or text, got %q", p, r.Kind)
		}
		key := [2]string{r.Index, r.Field}
		if j, dup := seen[key]; dup {
			bad("%s: same index and field as rules[%d]", p, j)
		}
		seen[key] = i
	}
	for i, a := range c.Allow {
		if a != "*" && !opNameRe.MatchString(a) {
			bad("allow[%d]: want an operation name such as indices.delete, or *, got %q", i, a)
		}
	}
	for i, w := range c.WriteIndices {
		if w == "" || strings.ContainsAny(w, `\/"<>| ,#?`) {
			bad("write_indices[%d]: want an index name or glob such as * or photos-*, got %q", i, w)
		}
	}
	for i, g := range c.CreateIndex.Settings {
		if g == "" || strings.HasPrefix(g, "index.") {
			bad("create_index.settings[%d]: want a setting name or glob without the index. prefix, got %q", i, g)
		}
	}
	for i, a := range c.CreateIndex.Aliases {
		if a == "" || strings.ContainsAny(a, `\/"<>| ,#?`) {
			bad("create_index.aliases[%d]: want an alias name or glob, got %q", i, a)
		}
	}
	if c.MaxQueryBuilders < 1 {
		bad("max_query_builders: must be at least 1, got %d", c.MaxQueryBuilders)
	}
	if c.MaxInflightBytes < c.MaxBodyBytes {
		bad("max_inflight_bytes: must be at least max_body_bytes (%d), got %d", c.MaxBodyBytes, c.MaxInflightBytes)
	}
	for i, k := range c.APIKeys {
		if len(k) < 16 || strings.TrimSpace(k) != k {
			bad("api_keys[%d]: keys must be at least 16 characters without surrounding spaces", i)
		}
	}
	if c.Credentials == CredentialsReplace && len(c.APIKeys) == 0 {
		bad("api_keys: required with credentials: replace (every client gets the gateway's Elasticsearch rights)")
	}
	if c.Credentials == CredentialsForward && len(c.APIKeys) > 0 {
		bad("api_keys: only used with credentials: replace (in forward mode the Authorization header carries the client's Elasticsearch credentials)")
	}
	errs = append(errs, c.URLFetch.validate()...)
	return errors.Join(errs...)
}

func (u URLFetch) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("url_fetch."+format, args...)) }
	for i, s := range u.Schemes {
		if s != "http" && s != "https" {
			bad("schemes[%d]: must be http or https, got %q", i, s)
		}
	}
	for i, h := range u.Hosts {
		if !hostRe.MatchString(h) {
			bad("hosts[%d]: want a lowercase host name or *.domain, got %q", i, h)
		}
	}
	if u.Enabled && len(u.Schemes) == 0 {
		bad("schemes: must list at least one scheme when enabled")
	}
	if u.Enabled && len(u.Hosts) == 0 {
		bad("hosts: must list at least one host when enabled (fetching any host is never allowed)")
	}
	if u.MaxBytes < 1 {
		bad("max_bytes: must be > 0, got %d", u.MaxBytes)
	}
	if u.Timeout <= 0 {
		bad("timeout: must be > 0, got %s", u.Timeout)
	}
	if u.MaxRedirects < 0 || u.MaxRedirects > 10 {
		bad("max_redirects: must be in [0, 10], got %d", u.MaxRedirects)
	}
	return errs
}

// ruleSet holds the rules in matching order.
type ruleSet []Rule

// match returns the rules whose index glob matches index.
func (rs ruleSet) match(index string) []Rule {
	var out []Rule
	for _, r := range rs {
		if globMatch(r.Index, index) {
			out = append(out, r)
		}
	}
	return out
}

// globMatch matches name against a pattern where * stands for any run of
// characters (Elasticsearch's index pattern syntax; no ? or classes).
func globMatch(pattern, name string) bool {
	for {
		star := strings.IndexByte(pattern, '*')
		if star < 0 {
			return pattern == name
		}
		if !strings.HasPrefix(name, pattern[:star]) {
			return false
		}
		name = name[star:]
		pattern = pattern[star+1:]
		if pattern == "" {
			return true
		}
		// Try every position for the rest of the pattern.
		for i := 0; i <= len(name); i++ {
			if globMatch(pattern, name[i:]) {
				return true
			}
		}
		return false
	}
}
