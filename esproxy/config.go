package esproxy

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Config is the esproxy section of the tusou configuration.
type Config struct {
	// Addresses are the Elasticsearch HTTP endpoints. The client round-robins
	// over them and retries on another node when one fails.
	Addresses []string `yaml:"addresses"`
	// Username and Password enable HTTP basic auth (both or neither).
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// APIKey is a base64 "id:key" Elasticsearch API key; exclusive with Username.
	APIKey string `yaml:"api_key"`
	// CACert is a PEM file with the CA(s) that signed the cluster's HTTPS certificate.
	CACert string `yaml:"ca_cert"`

	// Index is the ALIAS the gateway reads and writes. The concrete index behind
	// it is named after the model (see ConcreteIndexName), so switching models
	// is "create a new index, move the alias", never mixed vectors.
	Index string `yaml:"index"`
	// VectorField is the dense_vector field holding the image embedding.
	VectorField string `yaml:"vector_field"`
	// Dims is the embedding width the gateway expects; EnsureIndex checks it
	// against the model's provenance and the existing mapping.
	Dims int `yaml:"dims"`
	// Similarity is the dense_vector similarity: cosine or dot_product.
	// It only applies when EnsureIndex creates an index.
	Similarity string `yaml:"similarity"`
	// IndexOptions tune the HNSW graph and quantisation of new indices.
	IndexOptions IndexOptions `yaml:"index_options"`
	// Shards is number_of_shards for new indices.
	Shards int `yaml:"shards"`
	// Replicas is number_of_replicas for new indices.
	Replicas int `yaml:"replicas"`
	// ExcludeVectorFromSource drops the vector from the stored _source of new
	// indices (mapping _source.excludes). It saves roughly half the disk per
	// document, but then _reindex, _update and shard-count changes can no
	// longer carry the vectors: every image would have to be re-ingested.
	ExcludeVectorFromSource bool `yaml:"exclude_vector_from_source"`

	// RequestTimeout bounds one call (all retries included) when the caller's
	// context has no earlier deadline.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// MaxRetries is how often a request is retried on a connection error or a
	// 502/503/504 answer, with exponential backoff from 50ms.
	MaxRetries int `yaml:"max_retries"`
	// Refresh is the default refresh policy for Index, Bulk and Delete when the
	// caller passes "": wait_for, true or false. wait_for and true wait for
	// the gateway's coalesced refresh of the write index (group commit), not
	// for Elasticsearch's refresh interval.
	Refresh string `yaml:"refresh"`
	// RefreshMinInterval is the least quiet time between the end of one
	// coalesced refresh and the start of the next: it bounds the refresh rate
	// (each opens a Lucene segment) and lets writers arriving meanwhile share
	// one refresh. At most 1s: beyond Elasticsearch's default refresh
	// interval, plain wait_for would be faster.
	RefreshMinInterval time.Duration `yaml:"refresh_min_interval"`
	// NumCandidatesFactor sets a kNN query's num_candidates to factor*k (at
	// least 100, at most 10000) when the caller does not choose.
	NumCandidatesFactor int `yaml:"num_candidates_factor"`
	// RescoreOversample makes kNN scores exact on quantised indices
	// (int8_/int4_/bbq_ types): Elasticsearch gathers k*oversample candidates
	// on the quantised vectors, then rescores them on the stored float
	// vectors (kNN rescore_vector). 0 disables it (scores are then the
	// quantised approximation, off by up to ~1e-2 in cosine for int8).
	// Float indices (hnsw, flat) are exact already and never rescored.
	RescoreOversample float64 `yaml:"rescore_oversample"`
}

// IndexOptions are the dense_vector index_options for new indices.
type IndexOptions struct {
	// Type is the vector index type: hnsw, int8_hnsw, int4_hnsw, bbq_hnsw,
	// flat, int8_flat, int4_flat or bbq_flat.
	Type string `yaml:"type"`
	// M is the HNSW graph degree (hnsw types only).
	M int `yaml:"m"`
	// EFConstruction is the HNSW build-time candidate list (hnsw types only).
	EFConstruction int `yaml:"ef_construction"`
	// ConfidenceInterval is the int8/int4 quantile; nil lets Elasticsearch
	// choose (it derives one from dims), 0 asks for dynamic per-segment quantiles.
	ConfidenceInterval *float64 `yaml:"confidence_interval"`
}

// DefaultConfig returns the defaults; see the field comments for the why.
func DefaultConfig() Config {
	return Config{
		Addresses:   []string{"http://127.0.0.1:9200"},
		Index:       "tusou-images",
		VectorField: "image_embedding",
		// CLIP ViT-B/32 projects to 512 dimensions.
		Dims: 512,
		// cosine, not dot_product: on unit vectors both give the same ranking
		// and the same score ((1+cos)/2), and Elasticsearch 8.x normalises
		// cosine vectors at index time so HNSW runs a dot product either way.
		// But dot_product REJECTS any vector whose length is not 1±1e-4, and the
		// ES-compatible sidecar passes client-supplied vectors and query
		// vectors through; cosine keeps those working.
		Similarity: "cosine",
		IndexOptions: IndexOptions{
			// int8 scalar quantisation: 4x less vector memory for the HNSW
			// search with ~no recall loss on CLIP embeddings; the float vectors
			// stay on disk. m/ef_construction are Elasticsearch's defaults.
			Type:           "int8_hnsw",
			M:              16,
			EFConstruction: 100,
		},
		// One shard: kNN cost grows with the number of shards (each searches
		// its own graph), and one shard holds tens of millions of 512-d int8
		// vectors. Split only when a shard outgrows a node.
		Shards: 1,
		// One replica: production must survive a node loss and replicas serve
		// searches. On a single node the index is yellow, which Ready accepts;
		// the local stack and tests set 0.
		Replicas: 1,
		// A backstop: the gateway passes request deadlines; a bulk with
		// refresh=wait_for on a busy cluster may legitimately take seconds.
		RequestTimeout: 30 * time.Second,
		// 3 retries at 50/100/200ms ride over a node restart or a 503 from a
		// shard relocation without holding a request for long.
		MaxRetries: 3,
		// Searchable on success (ARCHITECTURE.md).
		Refresh: RefreshWaitFor,
		// A write waits for one refresh (d: ~5 ms for a small segment on an
		// idle node, 100+ ms on an overloaded one) plus what is left of one in
		// flight; the interval adds at most 5 ms more, and only under
		// concurrency: a client sending one image at a time spends longer
		// than 5 ms decoding and embedding between its refreshes. It caps
		// refreshes at 1/(d+5 ms), ~100/s on an idle node rather than ~200/s
		// back to back, and every tiny segment they open is merged later.
		RefreshMinInterval: 5 * time.Millisecond,
		// k=10 -> 100 candidates per shard: good recall for int8 HNSW at
		// modest cost; ES's own default (1.5k) is tuned for float vectors.
		NumCandidatesFactor: 10,
		// 3x is Elasticsearch's own default for bbq. Measured at k=10,
		// num_candidates 100, 30k CLIP-like vectors (bench/recall, 2 busy
		// cores): score error 4.4e-2 -> 1e-6, recall@10 0.909 -> 0.995, for
		// ~12 ms more per query (took p50 17 -> 29 ms). A near-duplicate
		// threshold or min_score only works on exact scores.
		RescoreOversample: 3,
	}
}

// Refresh policies accepted by Index, Bulk, Delete and Config.Refresh.
const (
	RefreshWaitFor = "wait_for"
	RefreshTrue    = "true"
	RefreshFalse   = "false"
)

// maxOversample bounds rescore_oversample: Elasticsearch accepts any value
// >= 1, but beyond 10x the rescoring costs more than exact search would.
const maxOversample = 10

// Quantized reports whether an index_options type stores quantised vectors
// whose kNN scores are approximate (int8_, int4_ and bbq_ types). An unknown
// type ("" when a mapping does not say) counts as quantised: rescoring a
// float index is a no-op in Elasticsearch, a wrong score is not.
func Quantized(indexType string) bool {
	return indexType != "hnsw" && indexType != "flat"
}

// maxDims is Elasticsearch 8.19's dense_vector limit.
const maxDims = 4096

var (
	validIndexOptionTypes = []string{"hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat", "int4_flat", "bbq_flat"}
	fieldNameRe           = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
)

// Validate reports every bad setting at once, each named by its yaml key.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(c.Addresses) == 0 {
		bad("addresses: must list at least one Elasticsearch URL")
	}
	for i, a := range c.Addresses {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("addresses[%d]: must be an http:// or https:// URL, got %q", i, a)
		}
	}
	if (c.Username == "") != (c.Password == "") {
		bad("username/password: set both or neither")
	}
	if c.APIKey != "" && c.Username != "" {
		bad("api_key: set either api_key or username/password, not both")
	}
	if err := validateIndexName(c.Index); err != nil {
		bad("index: %v", err)
	}
	if !fieldNameRe.MatchString(c.VectorField) {
		bad("vector_field: must match %s, got %q", fieldNameRe, c.VectorField)
	} else if _, reserved := reservedFields[c.VectorField]; reserved {
		bad("vector_field: %q is a reserved document field", c.VectorField)
	}
	if c.Dims < 1 || c.Dims > maxDims {
		bad("dims: must be in [1, %d], got %d", maxDims, c.Dims)
	}
	if c.Similarity != "cosine" && c.Similarity != "dot_product" {
		bad("similarity: must be cosine or dot_product, got %q", c.Similarity)
	}
	errs = append(errs, c.IndexOptions.validate(c.Dims)...)
	if c.Shards < 1 || c.Shards > 1024 {
		bad("shards: must be in [1, 1024], got %d", c.Shards)
	}
	if c.Replicas < 0 {
		bad("replicas: must be >= 0, got %d", c.Replicas)
	}
	if c.RequestTimeout <= 0 {
		bad("request_timeout: must be > 0, got %s", c.RequestTimeout)
	}
	if c.MaxRetries < 0 || c.MaxRetries > 10 {
		bad("max_retries: must be in [0, 10], got %d", c.MaxRetries)
	}
	if _, err := checkRefresh(c.Refresh); err != nil || c.Refresh == "" {
		bad("refresh: must be wait_for, true or false, got %q", c.Refresh)
	}
	if c.RefreshMinInterval < 0 || c.RefreshMinInterval > time.Second {
		bad("refresh_min_interval: must be in [0s, 1s], got %s", c.RefreshMinInterval)
	}
	if c.NumCandidatesFactor < 1 || c.NumCandidatesFactor > 1000 {
		bad("num_candidates_factor: must be in [1, 1000], got %d", c.NumCandidatesFactor)
	}
	if o := c.RescoreOversample; o != 0 && !(o >= 1 && o <= maxOversample) {
		bad("rescore_oversample: must be 0 (off) or in [1, %g], got %g", float64(maxOversample), o)
	}
	return errors.Join(errs...)
}

func (o IndexOptions) validate(dims int) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	known := false
	for _, t := range validIndexOptionTypes {
		known = known || t == o.Type
	}
	if !known {
		bad("index_options.type: must be one of %s, got %q", strings.Join(validIndexOptionTypes, ", "), o.Type)
		return errs
	}
	if strings.HasSuffix(o.Type, "_hnsw") || o.Type == "hnsw" {
		if o.M < 2 || o.M > 512 {
			bad("index_options.m: must be in [2, 512], got %d", o.M)
		}
		if o.EFConstruction < 1 || o.EFConstruction > 3200 {
			bad("index_options.ef_construction: must be in [1, 3200], got %d", o.EFConstruction)
		}
	}
	if o.ConfidenceInterval != nil {
		ci := *o.ConfidenceInterval
		if !strings.HasPrefix(o.Type, "int8") && !strings.HasPrefix(o.Type, "int4") {
			bad("index_options.confidence_interval: only applies to int8/int4 types, got type %q", o.Type)
		} else if ci != 0 && (ci < 0.9 || ci > 1) {
			bad("index_options.confidence_interval: must be 0 or in [0.9, 1.0], got %g", ci)
		}
	}
	if strings.HasPrefix(o.Type, "int4") && dims%2 != 0 {
		bad("index_options.type: int4 quantisation needs an even dims, got %d", dims)
	}
	if strings.HasPrefix(o.Type, "bbq") && dims < 64 {
		bad("index_options.type: bbq needs dims >= 64, got %d", dims)
	}
	return errs
}

// validateIndexName applies Elasticsearch's index/alias naming rules, keeping
// room for the model suffix that ConcreteIndexName appends.
func validateIndexName(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case len(name) > 100:
		return fmt.Errorf("must be at most 100 bytes, got %d", len(name))
	case name != strings.ToLower(name):
		return fmt.Errorf("must be lowercase, got %q", name)
	case strings.ContainsAny(name, `\/*?"<>| ,#:`):
		return fmt.Errorf(`must not contain any of \/*?"<>| ,#: (got %q)`, name)
	case strings.IndexAny(name[:1], "-_+.") == 0:
		return fmt.Errorf("must not start with '-', '_', '+' or '.', got %q", name)
	}
	return nil
}

// checkRefresh maps "" to "" and validates the rest.
func checkRefresh(r string) (string, error) {
	switch r {
	case "", RefreshWaitFor, RefreshTrue, RefreshFalse:
		return r, nil
	}
	return "", fmt.Errorf("refresh must be wait_for, true or false, got %q", r)
}
