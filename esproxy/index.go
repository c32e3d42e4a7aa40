package esproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
)

// Provenance says which model produced an index's vectors. It is stored in
// the index mapping's _meta and on every document; an index belongs to one
// provenance for life.
type Provenance struct {
	// Model is the embedding model's name, e.g. "clip_image".
	Model string `json:"model"`
	// Version is the model version (Triton's version or an export hash).
	Version string `json:"model_version"`
	// Dims is the embedding width.
	Dims int `json:"dims"`
	// Fingerprint is the model's unit embedding of a fixed probe input. Names
	// and versions can collide (the tiny test model and the real export are
	// both "clip_image" version 1); the fingerprint cannot, so an index is
	// refused when it was built by a model whose fingerprint differs (cosine
	// below FingerprintMinCosine). Optional: nil skips the check.
	Fingerprint []float32 `json:"fingerprint,omitempty"`
	// Generation names the model generation (image + text encoder sharing
	// one embedding space) the index belongs to; empty in indices made
	// before generations existed.
	Generation string `json:"generation,omitempty"`
	// TextModel and TextVersion are the generation's text encoder.
	TextModel   string `json:"text_model,omitempty"`
	TextVersion string `json:"text_model_version,omitempty"`
}

// FingerprintMinCosine is how close two fingerprints must be to count as the
// same model. The same weights on another device or precision (GPU fp16 vs
// CPU fp32) agree to better than 0.999; different weights, even of the same
// architecture, land far below.
const FingerprintMinCosine = 0.99

// sameModel reports whether got and want describe the same model, and why not.
func sameModel(got, want Provenance) (bool, string) {
	if got.Model != want.Model || got.Version != want.Version || got.Dims != want.Dims ||
		(got.TextModel != "" && want.TextModel != "" && (got.TextModel != want.TextModel || got.TextVersion != want.TextVersion)) {
		return false, fmt.Sprintf("holds vectors of %s, expected %s", got, want)
	}
	if len(got.Fingerprint) == 0 || len(want.Fingerprint) == 0 {
		return true, ""
	}
	if len(got.Fingerprint) != len(want.Fingerprint) {
		return false, fmt.Sprintf("has a %d-d model fingerprint, expected %d-d", len(got.Fingerprint), len(want.Fingerprint))
	}
	var dot, na, nb float64
	for i := range got.Fingerprint {
		a, b := float64(got.Fingerprint[i]), float64(want.Fingerprint[i])
		dot, na, nb = dot+a*b, na+a*a, nb+b*b
	}
	if cos := dot / math.Sqrt(na*nb); !(cos >= FingerprintMinCosine) {
		return false, fmt.Sprintf("was built by another model with the same name and version (fingerprint cosine %.4f < %.2f): different weights", cos, FingerprintMinCosine)
	}
	return true, ""
}

func (p Provenance) String() string {
	s := fmt.Sprintf("model %q version %q with %d dims", p.Model, p.Version, p.Dims)
	if p.TextModel != "" {
		s += fmt.Sprintf(", text model %q version %q", p.TextModel, p.TextVersion)
	}
	if p.Generation != "" {
		s = fmt.Sprintf("generation %q: %s", p.Generation, s)
	}
	return s
}

// IndexInfo describes the index EnsureIndex settled on.
type IndexInfo struct {
	// Alias is the configured alias.
	Alias string
	// WriteIndex is the concrete index writes go to.
	WriteIndex string
	// Indices are all concrete indices behind the alias, sorted.
	Indices []string
	// Created is true when this call created the index.
	Created bool
	// Quantized is true when any index behind the alias stores its vectors
	// quantised (see Quantized), so kNN rescores to return exact cosines.
	Quantized bool
}

// metaKey is the key under mapping _meta that holds tusou's provenance.
const metaKey = "tusou"

// schemaVersion is bumped when the document mapping changes incompatibly.
const schemaVersion = 1

// reservedFields are the document fields esproxy maps; the vector field must
// not collide with them.
var reservedFields = map[string]struct{}{
	"content_type": {}, "width": {}, "height": {}, "bytes": {}, "sha256": {}, "model": {},
	"model_version": {}, "dims": {}, "created_at": {}, "metadata": {},
}

// ConcreteIndexName is the first concrete index for alias and p:
// "<alias>-<model>-<version>-<hash8>-000001". Model and version are reduced
// to index-safe slugs; the hash of the exact provenance keeps two models that
// slug alike apart. The generation suffix leaves room for a later reindex of
// the same model (new settings) behind the same alias.
func ConcreteIndexName(alias string, p Provenance) string {
	key := p.Model + "\x00" + p.Version + "\x00" + strconv.Itoa(p.Dims)
	if p.TextModel != "" || p.Generation != "" {
		// Two generations may share an image encoder and differ in the text one.
		key += "\x00" + p.TextModel + "\x00" + p.TextVersion + "\x00" + p.Generation
	}
	h := sha256.Sum256([]byte(key))
	parts := []string{alias, slug(p.Model, 48)}
	if v := slug(p.Version, 24); v != "" {
		parts = append(parts, v)
	}
	parts = append(parts, hex.EncodeToString(h[:4]), "000001")
	return strings.Join(parts, "-")
}

// slug lowercases s and keeps [a-z0-9_.] (other runs become '_'), at most n bytes.
func slug(s string, n int) string {
	var b strings.Builder
	lastUnderscore := false
	for _, r := range strings.ToLower(s) {
		ok := (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '.'
		switch {
		case ok:
			b.WriteRune(r)
			lastUnderscore = false
		case !lastUnderscore:
			b.WriteByte('_')
			lastUnderscore = true
		}
		if b.Len() >= n {
			break
		}
	}
	out := b.String()
	if len(out) > n {
		out = out[:n]
	}
	return strings.Trim(out, "_.")
}

// indexBody is the create-index request: settings, mapping and, when
// withAlias, the alias (pointing at it as the write index).
func (c *Client) indexBody(p Provenance, withAlias bool) ([]byte, error) {
	opts := map[string]any{"type": c.cfg.IndexOptions.Type}
	if t := c.cfg.IndexOptions.Type; t == "hnsw" || strings.HasSuffix(t, "_hnsw") {
		opts["m"] = c.cfg.IndexOptions.M
		opts["ef_construction"] = c.cfg.IndexOptions.EFConstruction
	}
	if ci := c.cfg.IndexOptions.ConfidenceInterval; ci != nil {
		opts["confidence_interval"] = *ci
	}
	mappings := map[string]any{
		// Unknown top-level fields are refused: the schema is ours, and a
		// typo'd field would otherwise silently create a mapping.
		"dynamic": "strict",
		"_meta":   map[string]any{metaKey: metaOf(p)},
		"properties": map[string]any{
			c.cfg.VectorField: map[string]any{
				"type":          "dense_vector",
				"dims":          p.Dims,
				"index":         true,
				"similarity":    c.cfg.Similarity,
				"index_options": opts,
			},
			// flattened: arbitrary client keys become keyword values of ONE
			// field, so no mapping explosion, no type clash between documents
			// ("tag": 5 vs "tag": "x") and term filters on metadata.<key>.
			"metadata":      map[string]any{"type": "flattened"},
			"content_type":  map[string]any{"type": "keyword"},
			"width":         map[string]any{"type": "integer"},
			"height":        map[string]any{"type": "integer"},
			"bytes":         map[string]any{"type": "long"},
			"sha256":        map[string]any{"type": "keyword"},
			"model":         map[string]any{"type": "keyword"},
			"model_version": map[string]any{"type": "keyword"},
			"dims":          map[string]any{"type": "integer"},
			"created_at":    map[string]any{"type": "date"},
		},
	}
	if c.cfg.ExcludeVectorFromSource {
		mappings["_source"] = map[string]any{"excludes": []string{c.cfg.VectorField}}
	}
	body := map[string]any{
		"settings": map[string]any{"index": map[string]any{
			"number_of_shards":   c.cfg.Shards,
			"number_of_replicas": c.cfg.Replicas,
		}},
		"mappings": mappings,
	}
	if withAlias {
		body["aliases"] = map[string]any{c.cfg.Index: map[string]any{"is_write_index": true}}
	}
	return json.Marshal(body)
}

// metaOf is the provenance as stored under the mapping's _meta.tusou.
func metaOf(p Provenance) map[string]any {
	m := map[string]any{
		"schema_version": schemaVersion,
		"model":          p.Model,
		"model_version":  p.Version,
		"dims":           p.Dims,
		"fingerprint":    p.Fingerprint,
	}
	if p.Generation != "" {
		m["generation"] = p.Generation
	}
	if p.TextModel != "" {
		m["text_model"] = p.TextModel
		m["text_model_version"] = p.TextVersion
	}
	return m
}

// existingIndex is the part of GET /<alias> that EnsureIndex checks.
type existingIndex struct {
	Aliases map[string]struct {
		IsWriteIndex *bool `json:"is_write_index"`
	} `json:"aliases"`
	Mappings struct {
		Meta       map[string]json.RawMessage `json:"_meta"`
		Properties map[string]struct {
			Type         string `json:"type"`
			Dims         int    `json:"dims"`
			Index        *bool  `json:"index"`
			Similarity   string `json:"similarity"`
			IndexOptions struct {
				Type string `json:"type"`
			} `json:"index_options"`
		} `json:"properties"`
	} `json:"mappings"`
}

// EnsureIndex makes the alias usable for p: it creates the first concrete
// index (mapping + alias, atomically) when the alias is missing, and
// otherwise refuses, with a Conflict naming the index and both provenances,
// unless every index behind the alias holds p's vectors. Safe to call from
// several gateways at once. Writes need a successful EnsureIndex first.
func (c *Client) EnsureIndex(ctx context.Context, p Provenance) (info IndexInfo, err error) {
	defer c.observe("ensure_index", time.Now(), &err)
	if p.Model == "" || p.Dims < 1 {
		return info, apierr.New(apierr.Internal, CodeIndexMismatch, "esproxy: provenance needs a model and dims, got %s", p)
	}
	if p.Dims != c.cfg.Dims {
		return info, apierr.New(apierr.Internal, CodeIndexMismatch,
			"model %q outputs %d dims but esproxy dims is %d", p.Model, p.Dims, c.cfg.Dims)
	}
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()

	for attempt := 0; ; attempt++ {
		existing, err := c.getIndex(ctx)
		if err != nil {
			return info, err
		}
		if existing != nil {
			info, err = c.checkExisting(existing, p)
			if err == nil {
				c.writeIndex.Store(&info.WriteIndex)
				c.prov.Store(&p)
				c.quantized.Store(info.Quantized)
				c.log.Info("elasticsearch index accepted", zap.String("alias", info.Alias),
					zap.String("write_index", info.WriteIndex), zap.Strings("indices", info.Indices), zap.Stringer("provenance", p))
			}
			return info, err
		}
		name := ConcreteIndexName(c.cfg.Index, p)
		created, err := c.createIndex(ctx, name, p, true)
		if err != nil {
			return info, err
		}
		if created {
			c.writeIndex.Store(&name)
			c.prov.Store(&p)
			c.log.Info("elasticsearch index created", zap.String("alias", c.cfg.Index),
				zap.String("index", name), zap.Stringer("provenance", p))
			c.quantized.Store(Quantized(c.cfg.IndexOptions.Type))
			return IndexInfo{Alias: c.cfg.Index, WriteIndex: name, Indices: []string{name}, Created: true,
				Quantized: Quantized(c.cfg.IndexOptions.Type)}, nil
		}
		// Someone else created it between our GET and PUT: look again once.
		if attempt > 0 {
			return info, apierr.New(apierr.Conflict, CodeIndexMismatch,
				"elasticsearch index %q exists but alias %q does not point at it; add the alias or delete the index", name, c.cfg.Index)
		}
	}
}

// getIndex returns the indices behind the alias, or nil when there are none.
func (c *Client) getIndex(ctx context.Context) (map[string]existingIndex, error) {
	return c.getIndices(ctx, c.cfg.Index)
}

// getIndices returns the aliases and mappings of the indices name (an index
// or an alias) stands for, nil when it does not exist.
func (c *Client) getIndices(ctx context.Context, name string) (map[string]existingIndex, error) {
	res, err := c.perform(ctx, "get index", esapi.IndicesGetRequest{
		Index:    []string{name},
		Features: "aliases,mappings",
	}, 404)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode == 404 {
		return nil, nil
	}
	var out map[string]existingIndex
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return nil, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch get index: unreadable answer")
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// createIndex creates name with the alias. It reports false (and no error)
// when the index already exists.
func (c *Client) createIndex(ctx context.Context, name string, p Provenance, withAlias bool) (bool, error) {
	body, err := c.indexBody(p, withAlias)
	if err != nil {
		return false, apierr.Wrap(err, apierr.Internal, CodeIndexMismatch, "esproxy: build index body")
	}
	res, err := c.perform(ctx, "create index", esapi.IndicesCreateRequest{Index: name, Body: bytes.NewReader(body)}, 400)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	if res.StatusCode == 400 {
		b := readBody(res.Body, 64<<10)
		if typ, _ := parseESError(b); typ == "resource_already_exists_exception" {
			return false, nil
		}
		e := statusError("create index", res.StatusCode, res.Header, b)
		// A 400 here is configuration (index options, alias clashing with an
		// index name), not client input.
		return false, apierr.Wrap(e, apierr.Internal, CodeIndexMismatch,
			"cannot create elasticsearch index %q: %s", name, e.Message)
	}
	var ack struct {
		ShardsAcknowledged bool `json:"shards_acknowledged"`
	}
	_ = json.NewDecoder(res.Body).Decode(&ack)
	if !ack.ShardsAcknowledged {
		c.log.Warn("elasticsearch index created but its shards did not start in time", zap.String("index", name))
	}
	return true, nil
}

// checkExisting verifies every index behind the alias against p.
func (c *Client) checkExisting(indices map[string]existingIndex, p Provenance) (IndexInfo, error) {
	info := IndexInfo{Alias: c.cfg.Index}
	for name := range indices {
		info.Indices = append(info.Indices, name)
	}
	sort.Strings(info.Indices)

	var problems []string
	for _, name := range info.Indices {
		ix := indices[name]
		if name == c.cfg.Index {
			// Writes go through the alias (require_alias) so models can be
			// switched by moving it; a concrete index in its place cannot.
			problems = append(problems, fmt.Sprintf("%q is a concrete index, not an alias; move its documents to a new index or configure another index name", name))
		}
		if a, ok := ix.Aliases[c.cfg.Index]; ok && a.IsWriteIndex != nil && *a.IsWriteIndex {
			info.WriteIndex = name
		}
		pr, quantized := c.indexProblems(name, ix, p)
		problems = append(problems, pr...)
		info.Quantized = info.Quantized || quantized
	}
	if info.WriteIndex == "" && len(info.Indices) == 1 {
		info.WriteIndex = info.Indices[0]
	}
	if info.WriteIndex == "" {
		problems = append(problems, fmt.Sprintf("alias %q points at %d indices and none is its write index", c.cfg.Index, len(info.Indices)))
	}
	if len(problems) > 0 {
		return info, apierr.New(apierr.Conflict, CodeIndexMismatch,
			"refusing elasticsearch alias %q: %s; an index belongs to one model: create a new index for this model and move the alias",
			c.cfg.Index, strings.Join(problems, "; "))
	}
	return info, nil
}

// indexProblems checks one concrete index against p: provenance, vector
// field, dims. It also reports whether the index quantises its vectors.
func (c *Client) indexProblems(name string, ix existingIndex, p Provenance) (problems []string, quantized bool) {
	var got Provenance
	if raw, ok := ix.Mappings.Meta[metaKey]; !ok || json.Unmarshal(raw, &got) != nil {
		return []string{fmt.Sprintf("index %q has no tusou provenance in its mapping _meta (expected %s)", name, p)}, false
	}
	vf, ok := ix.Mappings.Properties[c.cfg.VectorField]
	switch {
	case !ok || vf.Type != "dense_vector":
		problems = append(problems, fmt.Sprintf("index %q has no dense_vector field %q", name, c.cfg.VectorField))
	case vf.Index != nil && !*vf.Index:
		problems = append(problems, fmt.Sprintf("index %q field %q is not indexed for kNN", name, c.cfg.VectorField))
	case vf.Dims != p.Dims:
		problems = append(problems, fmt.Sprintf("index %q field %q has %d dims, expected %d", name, c.cfg.VectorField, vf.Dims, p.Dims))
	}
	if ok, why := sameModel(got, p); !ok {
		problems = append(problems, fmt.Sprintf("index %q %s", name, why))
	}
	if vf.Similarity != "" && vf.Similarity != c.cfg.Similarity {
		c.log.Warn("existing index uses another similarity than configured; the index wins",
			zap.String("index", name), zap.String("index_similarity", vf.Similarity), zap.String("configured", c.cfg.Similarity))
	}
	if vf.IndexOptions.Type != "" && vf.IndexOptions.Type != c.cfg.IndexOptions.Type {
		c.log.Warn("existing index uses other index_options than configured; the index wins",
			zap.String("index", name), zap.String("index_type", vf.IndexOptions.Type), zap.String("configured", c.cfg.IndexOptions.Type))
	}
	return problems, Quantized(vf.IndexOptions.Type)
}

// SameModel reports whether an index with provenance got holds the vectors
// of the model described by want (names, versions, dims, fingerprint), and
// if not, why.
func SameModel(got, want Provenance) (bool, string) { return sameModel(got, want) }
