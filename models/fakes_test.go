package models

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/preprocess"
)

// Stand-ins for what a unit test cannot have: encoders, the blob store and
// an Elasticsearch index (memStore). The integration tests use the
// encoders with the real Elasticsearch.

// fakeVector is a deterministic unit vector of (seed, input): two seeds are
// two unrelated "models".
func fakeVector(seed, input string, dims int) []float32 {
	v := make([]float32, dims)
	var sq float64
	for i := range v {
		h := sha256.Sum256([]byte(seed + "\x00" + input + "\x00" + string(rune('a'+i%26)) + string(rune(i))))
		x := float64(binary.LittleEndian.Uint32(h[:4]))/float64(math.MaxUint32) - 0.5
		v[i] = float32(x)
		sq += x * x
	}
	n := math.Sqrt(sq)
	for i := range v {
		v[i] = float32(float64(v[i]) / n)
	}
	return v
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fakeImages embeds image bytes as fakeVector(seed, bytes).
type fakeImages struct {
	seed string
	dims int
}

func (f fakeImages) raw() ImageEmbedder { return f }

func (f fakeImages) Embed(ctx context.Context, data []byte) ([]float32, preprocess.Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, preprocess.Info{}, err
	}
	d := f.dims
	if d == 0 {
		d = 32
	}
	return fakeVector(f.seed, string(data), d), preprocess.Info{}, nil
}

// fakeTexts embeds text as fakeVector(seed, text).
type fakeTexts struct {
	seed string
	dims int
}

func (f fakeTexts) Embed(ctx context.Context, text string) ([]float32, error) {
	d := f.dims
	if d == 0 {
		d = 32
	}
	return fakeVector(f.seed, "text:"+text, d), nil
}

// failingImages fails for the listed inputs (each only `times` times when
// times > 0), else embeds like fakeImages.
type failingImages struct {
	fakeImages
	mu    sync.Mutex
	fail  map[string]int // input → failures left (-1: always)
	calls int
}

func (f *failingImages) Embed(ctx context.Context, data []byte) ([]float32, preprocess.Info, error) {
	f.mu.Lock()
	f.calls++
	left, ok := f.fail[string(data)]
	if ok && left != 0 {
		f.fail[string(data)] = left - 1
		f.mu.Unlock()
		return nil, preprocess.Info{}, apierr.New(apierr.Unprocessable, "image_corrupt", "the image is corrupt")
	}
	f.mu.Unlock()
	return f.fakeImages.Embed(ctx, data)
}

// memOriginals is a blob store in a map.
type memOriginals struct {
	mu sync.Mutex
	m  map[string][]byte
}

type nopSeekCloser struct{ *bytes.Reader }

func (nopSeekCloser) Close() error { return nil }

func (o *memOriginals) Open(ctx context.Context, id string) (io.ReadSeekCloser, int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	b, ok := o.m[id]
	if !ok {
		return nil, 0, apierr.New(apierr.NotFound, "content_not_found", "no stored content for image %q", id)
	}
	return nopSeekCloser{bytes.NewReader(b)}, int64(len(b)), nil
}

// memStore is an index in memory with Elasticsearch's semantics where the
// switch depends on them: create-only writes, per-write sequence numbers,
// point-in-time scans, guarded deletes, realtime reads.
type memStore struct {
	mu   sync.Mutex
	docs map[string]memDoc
	seq  int64
	dims int
	// afterExists runs after each Exists or GetDocs (outside the lock): a
	// concurrent writer's chance to race the switch.
	afterExists func(ids []string)
	// knnBroken makes kNN answer nothing.
	knnBroken bool
	// bulkErr fails every bulk request as a whole.
	bulkErr error
}

type memDoc struct {
	doc esproxy.Doc
	vec []float32
	seq int64
}

func newMemStore(dims int) *memStore { return &memStore{docs: map[string]memDoc{}, dims: dims} }

func (m *memStore) put(d esproxy.Doc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	if d.CreatedAt.IsZero() {
		d.CreatedAt = time.Now().UTC()
	}
	vec := d.Vector
	d.Vector = nil
	m.docs[d.ID] = memDoc{doc: d, vec: vec, seq: m.seq}
}

func (m *memStore) del(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	delete(m.docs, id)
}

func (m *memStore) ids() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, 0, len(m.docs))
	for id := range m.docs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (m *memStore) get(id string) (memDoc, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.docs[id]
	return d, ok
}

func (m *memStore) Scan(ctx context.Context, pageSize int, fn func([]esproxy.ScanHit) error) error {
	m.mu.Lock()
	hits := make([]esproxy.ScanHit, 0, len(m.docs))
	for id, d := range m.docs {
		hits = append(hits, esproxy.ScanHit{ID: id, SeqNo: d.seq, PrimaryTerm: 1})
	}
	m.mu.Unlock()
	sort.Slice(hits, func(i, j int) bool { return hits[i].ID < hits[j].ID })
	for len(hits) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(pageSize, len(hits))
		if err := fn(hits[:n]); err != nil {
			return err
		}
		hits = hits[n:]
	}
	return nil
}

func (m *memStore) Exists(ctx context.Context, ids []string) ([]string, error) {
	m.mu.Lock()
	var found []string
	for _, id := range ids {
		if _, ok := m.docs[id]; ok {
			found = append(found, id)
		}
	}
	hook := m.afterExists
	m.mu.Unlock()
	if hook != nil {
		hook(ids)
	}
	return found, nil
}

func (m *memStore) GetDocs(ctx context.Context, ids []string) ([]esproxy.StoredDoc, error) {
	m.mu.Lock()
	var out []esproxy.StoredDoc
	for _, id := range ids {
		if d, ok := m.docs[id]; ok {
			out = append(out, esproxy.StoredDoc{Doc: d.doc, SeqNo: d.seq, PrimaryTerm: 1})
		}
	}
	hook := m.afterExists
	m.mu.Unlock()
	if hook != nil {
		hook(ids)
	}
	return out, nil
}

func (m *memStore) Bulk(ctx context.Context, docs []esproxy.Doc, refresh string) ([]esproxy.ItemResult, error) {
	if m.bulkErr != nil {
		return nil, m.bulkErr
	}
	items := make([]esproxy.ItemResult, len(docs))
	for i, d := range docs {
		items[i].ID = d.ID
		if len(d.Vector) != m.dims {
			items[i].Result = esproxy.Failed
			items[i].Err = apierr.New(apierr.InvalidArgument, esproxy.CodeInvalidDoc, "vector has %d dims", len(d.Vector))
			continue
		}
		if _, ok := m.get(d.ID); ok {
			items[i].Result = esproxy.Exists
			continue
		}
		m.put(d)
		items[i].Result = esproxy.Created
	}
	return items, nil
}

func (m *memStore) DeleteIfUnchanged(ctx context.Context, id string, seqNo, primaryTerm int64) (esproxy.DeleteResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.docs[id]
	switch {
	case !ok:
		return esproxy.Gone, nil
	case d.seq != seqNo:
		return esproxy.Changed, nil
	}
	m.seq++
	delete(m.docs, id)
	return esproxy.Deleted, nil
}

func (m *memStore) Count(ctx context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.docs)), nil
}

func (m *memStore) CountCreatedBefore(ctx context.Context, t time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, d := range m.docs {
		if d.doc.CreatedAt.Before(t) {
			n++
		}
	}
	return n, nil
}

func (m *memStore) Vector(ctx context.Context, id string) ([]float32, error) {
	d, ok := m.get(id)
	if !ok {
		return nil, apierr.New(apierr.NotFound, esproxy.CodeDocNotFound, "document %q not found", id)
	}
	return d.vec, nil
}

func (m *memStore) KNN(ctx context.Context, q esproxy.KNNQuery) ([]esproxy.Hit, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.knnBroken {
		return nil, nil
	}
	hits := make([]esproxy.Hit, 0, len(m.docs))
	for id, d := range m.docs {
		var dot float64
		for i := range d.vec {
			dot += float64(d.vec[i]) * float64(q.Vector[i])
		}
		hits = append(hits, esproxy.Hit{ID: id, Similarity: dot, Score: (1 + dot) / 2, Doc: d.doc})
	}
	sort.Slice(hits, func(i, j int) bool { return hits[i].Similarity > hits[j].Similarity })
	return hits[:min(q.K, len(hits))], nil
}

// metricValue reads one counter or gauge.
func metricValue(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var d dto.Metric
	if err := (<-ch).Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
