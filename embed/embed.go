// Package embed turns image bytes and text into unit-length CLIP vectors:
// decode and preprocess (CPU, bounded by a worker pool), then the model call
// (Triton, batched by the triton package), then L2 normalisation. Both the
// native REST API and the Elasticsearch-compatible sidecar use it, so every
// vector in an index went through exactly the same path.
package embed

import (
	"context"
	"math"
	"sync"

	"github.com/tusou/tusou/admission"
	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/preprocess"
)

// ImageModel computes one raw (unnormalised) embedding from one CHW tensor.
// The triton package's ImageEncoder implements it, batching concurrent calls.
// The model owns pixels until Embed returns a result: when Embed returns
// because ctx ended, a batch it joined may still be reading them, so the
// caller must not reuse them.
type ImageModel interface {
	Embed(ctx context.Context, pixels []float32) ([]float32, error)
}

// TextModel computes one raw embedding from token ids ([CLS] ... [SEP]).
type TextModel interface {
	Embed(ctx context.Context, ids []int64) ([]float32, error)
}

// Tokenizer turns text into token ids including the special tokens.
type Tokenizer interface {
	Encode(text string) []int64
}

// Preprocessor decodes image bytes into a CLIP input tensor.
type Preprocessor interface {
	Preprocess(ctx context.Context, data []byte, dst []float32) (preprocess.Info, error)
}

// decodeCoster is implemented by preprocessors that can tell the memory a
// decode needs from the header (preprocess.Preprocessor.DecodeCost).
type decodeCoster interface {
	DecodeCost(data []byte) int64
}

// Images embeds images. It is safe for concurrent use.
type Images struct {
	pre    Preprocessor
	model  ImageModel
	limit  *Limiter
	tensor int
	pool   sync.Pool
	budget *admission.Budget // nil: decodes are not charged
}

// NewImages returns an image embedder. tensorLen is the model input size
// (3*224*224 for CLIP ViT-B/32); limit bounds concurrent CPU preprocessing.
func NewImages(pre Preprocessor, model ImageModel, tensorLen int, limit *Limiter) *Images {
	m := &Images{pre: pre, model: model, limit: limit, tensor: tensorLen}
	m.pool.New = func() any { b := make([]float32, tensorLen); return &b }
	return m
}

// UseBudget charges each decode's memory (the preprocessor's DecodeCost) to
// b while the image is decoded; when it does not fit, Embed fails with
// Overloaded (429). A decode is charged at most half the budget, so the
// largest image max_pixels allows can still be decoded when the budget is
// otherwise quiet. Call it before serving.
func (m *Images) UseBudget(b *admission.Budget) { m.budget = b }

// Embed decodes, preprocesses and embeds one image, returning a unit vector.
func (m *Images) Embed(ctx context.Context, data []byte) ([]float32, preprocess.Info, error) {
	buf := m.pool.Get().(*[]float32)
	var info preprocess.Info
	err := m.limit.Do(ctx, func() error {
		release, err := m.chargeDecode(data)
		if err != nil {
			return err
		}
		defer release()
		info, err = m.pre.Preprocess(ctx, data, *buf)
		return err
	})
	if err != nil {
		m.pool.Put(buf)
		return nil, info, err
	}
	vec, err := m.model.Embed(ctx, *buf)
	if ctx.Err() == nil {
		m.pool.Put(buf)
	} // else the caller gave up and a batch may still read buf: the GC takes it
	if err != nil {
		return nil, info, err
	}
	if err := Normalize(vec); err != nil {
		return nil, info, err
	}
	return vec, info, nil
}

// chargeDecode reserves the decode's memory in the budget, if any; inside a
// worker slot, because only running decodes hold decoded pixels.
func (m *Images) chargeDecode(data []byte) (release func(), err error) {
	c, ok := m.pre.(decodeCoster)
	if m.budget == nil || !ok {
		return func() {}, nil
	}
	n := min(c.DecodeCost(data), m.budget.Limit()/2)
	if !m.budget.TryAcquire(n) {
		return nil, m.budget.Refused("image_decode", n)
	}
	return func() { m.budget.Release(n) }, nil
}

// Texts embeds texts. It is safe for concurrent use.
type Texts struct {
	tok   Tokenizer
	model TextModel
}

// NewTexts returns a text embedder.
func NewTexts(tok Tokenizer, model TextModel) *Texts {
	return &Texts{tok: tok, model: model}
}

// Embed tokenises and embeds one text, returning a unit vector.
func (t *Texts) Embed(ctx context.Context, text string) ([]float32, error) {
	ids := t.tok.Encode(text)
	vec, err := t.model.Embed(ctx, ids)
	if err != nil {
		return nil, err
	}
	if err := Normalize(vec); err != nil {
		return nil, err
	}
	return vec, nil
}

// Normalize scales v to unit L2 length in place. Elasticsearch's dot_product
// similarity requires unit vectors, and cosine on unit vectors is a dot
// product, so normalising once here keeps every index consistent.
func Normalize(v []float32) error {
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	if sum == 0 || math.IsNaN(sum) || math.IsInf(sum, 0) {
		return apierr.New(apierr.BadGateway, "model_output_invalid", "the model returned a zero or non-finite embedding")
	}
	inv := float32(1 / math.Sqrt(sum))
	for i := range v {
		v[i] *= inv
	}
	return nil
}
