package triton

import (
	"context"
	"encoding/binary"
	"sync"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/triton/inferencepb"
)

// ImageEncoder turns preprocessed images (CHW float32, CLIP-normalised) into
// embeddings with the image model, micro-batching concurrent calls. Vectors
// are returned as the model produces them, NOT L2-normalised: the gateway
// normalises (see the architecture notes).
type ImageEncoder struct {
	c       *Client
	cfg     ImageModelConfig
	elems   int // floats per image: C*H*W
	batcher *Batcher[[]float32, []float32]
	bufs    busyPool // request tensors, reused only while batches overlap
}

// busyPool keeps request buffers for reuse only while another batch is in
// flight. Under load (batches overlapping) every batch reuses a buffer; when
// the last in-flight batch ends, the buffers are dropped, so an idle gateway
// does not pin MaxInflight full-batch tensors (64 images are 38 MB each) the
// way a sync.Pool would until two garbage collections later.
type busyPool struct {
	mu    sync.Mutex
	users int
	free  [][]byte
}

// get returns a buffer of n bytes (contents undefined).
func (p *busyPool) get(n int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users++
	for len(p.free) > 0 {
		b := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		if cap(b) >= n {
			return b[:n]
		}
	}
	return make([]byte, n)
}

// put returns b; it is kept only if another batch is still in flight.
func (p *busyPool) put(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users--
	if p.users > 0 {
		p.free = append(p.free, b)
	} else {
		p.free = nil
	}
}

// NewImageEncoder starts the batcher of the configured image model
// (section image_model) on c. Close it before closing c.
func NewImageEncoder(c *Client) *ImageEncoder { return NewImageEncoderFor(c, c.cfg.Image) }

// NewImageEncoderFor starts a batcher for image model cfg (one generation's)
// on c. Close it before closing c.
func NewImageEncoderFor(c *Client, cfg ImageModelConfig) *ImageEncoder {
	e := &ImageEncoder{c: c, cfg: cfg, elems: cfg.Channels * cfg.Height * cfg.Width}
	c.track(cfg.ModelConfig)
	e.batcher = NewBatcher(cfg.Label(), cfg.Batcher, e.flush, c.metrics, c.log, c.cfg.Retry.RetryAfter)
	return e
}

// Embed returns the embedding (Dims floats) of one image tensor of
// Channels*Height*Width floats in CHW order. It waits for a batch; errors
// are *apierr.Error (Overloaded when the queue is full, Timeout, ...). When
// it returns because ctx ended, pixels may still be read by the batch it
// joined: the caller must not reuse them (see Batcher.Submit).
func (e *ImageEncoder) Embed(ctx context.Context, pixels []float32) ([]float32, error) {
	if err := e.check(pixels); err != nil {
		return nil, err
	}
	return e.batcher.Submit(ctx, pixels)
}

// EmbedBatch embeds images the caller already grouped (bulk ingest), sent as
// ModelInfer calls of up to max_batch_size images each, bypassing the queue
// but sharing the in-flight limit. Results are in input order.
func (e *ImageEncoder) EmbedBatch(ctx context.Context, pixels [][]float32) ([][]float32, error) {
	for _, p := range pixels {
		if err := e.check(p); err != nil {
			return nil, err
		}
	}
	return e.batcher.Do(ctx, pixels)
}

// Close stops accepting images, sends those queued and waits for in-flight
// batches until ctx ends (see Batcher.Close).
func (e *ImageEncoder) Close(ctx context.Context) error { return e.batcher.Close(ctx) }

// Model returns the configured model (name, version, dims) for provenance.
func (e *ImageEncoder) Model() ModelConfig { return e.cfg.ModelConfig }

// TensorLen is the number of floats Embed expects per image.
func (e *ImageEncoder) TensorLen() int { return e.elems }

func (e *ImageEncoder) check(pixels []float32) error {
	if len(pixels) != e.elems {
		return apierr.New(apierr.InvalidArgument, CodeInvalidInput,
			"image tensor has %d values, %s expects %d (%dx%dx%d CHW)", len(pixels), e.cfg.Name, e.elems, e.cfg.Channels, e.cfg.Height, e.cfg.Width)
	}
	return nil
}

// flush sends one batch as a single [n,C,H,W] FP32 tensor. The request
// buffer is reused while batches overlap: a 32-image batch is 19 MB, and
// allocating that per batch would churn the GC at thousands of images per
// second.
func (e *ImageEncoder) flush(ctx context.Context, items [][]float32) ([][]float32, error) {
	n := len(items)
	buf := e.bufs.get(4 * e.elems * n)
	stride := 4 * e.elems
	for i, px := range items {
		putFloat32s(buf[i*stride:(i+1)*stride], px)
	}
	req := &inferencepb.ModelInferRequest{
		ModelName:    e.cfg.Name,
		ModelVersion: e.cfg.Version,
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{
			Name:     e.cfg.InputName,
			Datatype: imageInputDatatype,
			Shape:    []int64{int64(n), int64(e.cfg.Channels), int64(e.cfg.Height), int64(e.cfg.Width)},
		}},
		Outputs:          []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: e.cfg.OutputName}},
		RawInputContents: [][]byte{buf},
	}
	resp, err := e.c.infer(ctx, e.cfg.ModelConfig, req)
	// gRPC has serialised the request once the unary call returns, so the
	// buffer is free again.
	e.bufs.put(buf)
	if err != nil {
		return nil, err
	}
	return decodeEmbeddings(resp, e.cfg.Name, e.cfg.OutputName, n, e.cfg.Dims)
}

// TextEncoder turns token id sequences (from the gateway's tokenizer, [CLS]
// and [SEP] included) into embeddings with the text model, micro-batching
// concurrent calls. Vectors are NOT L2-normalised.
type TextEncoder struct {
	c       *Client
	cfg     TextModelConfig
	batcher *Batcher[[]int64, []float32]
}

// NewTextEncoder starts the text model's batcher on c (config section
// text_model). Close it before closing c.
func NewTextEncoder(c *Client) *TextEncoder { return NewTextEncoderFor(c, c.cfg.Text) }

// NewTextEncoderFor starts a batcher for text model cfg (one generation's)
// on c. Close it before closing c.
func NewTextEncoderFor(c *Client, cfg TextModelConfig) *TextEncoder {
	e := &TextEncoder{c: c, cfg: cfg}
	c.track(cfg.ModelConfig)
	e.batcher = NewBatcher(cfg.Label(), cfg.Batcher, e.flush, c.metrics, c.log, c.cfg.Retry.RetryAfter)
	return e
}

// Embed returns the embedding of one token sequence of 1..max_seq_len ids.
// In a batch, shorter sequences are padded with pad_id and masked out, so
// the result does not depend on what it was batched with.
func (e *TextEncoder) Embed(ctx context.Context, ids []int64) ([]float32, error) {
	if err := e.check(ids); err != nil {
		return nil, err
	}
	return e.batcher.Submit(ctx, ids)
}

// EmbedBatch embeds sequences the caller already grouped; see
// ImageEncoder.EmbedBatch.
func (e *TextEncoder) EmbedBatch(ctx context.Context, ids [][]int64) ([][]float32, error) {
	for _, s := range ids {
		if err := e.check(s); err != nil {
			return nil, err
		}
	}
	return e.batcher.Do(ctx, ids)
}

// Close stops accepting texts, sends those queued and waits for in-flight
// batches until ctx ends.
func (e *TextEncoder) Close(ctx context.Context) error { return e.batcher.Close(ctx) }

// Model returns the configured model (name, version, dims) for provenance.
func (e *TextEncoder) Model() ModelConfig { return e.cfg.ModelConfig }

func (e *TextEncoder) check(ids []int64) error {
	if len(ids) == 0 || len(ids) > e.cfg.MaxSeqLen {
		return apierr.New(apierr.InvalidArgument, CodeInvalidInput,
			"token sequence has %d ids, %s accepts 1..%d", len(ids), e.cfg.Name, e.cfg.MaxSeqLen)
	}
	return nil
}

// flush pads the batch to its longest sequence (rounded up to
// pad_to_multiple) and sends input_ids and attention_mask as [n, L] INT64
// tensors.
func (e *TextEncoder) flush(ctx context.Context, items [][]int64) ([][]float32, error) {
	n, l := len(items), 0
	for _, s := range items {
		l = max(l, len(s))
	}
	if m := e.cfg.PadToMultiple; m > 1 {
		l = max(l, min((l+m-1)/m*m, e.cfg.MaxSeqLen))
	}
	// Both tensors in one allocation, written in place: ids then mask.
	raw := make([]byte, 2*8*n*l)
	idsRaw, maskRaw := raw[:8*n*l], raw[8*n*l:]
	for i, s := range items {
		row, mrow := idsRaw[8*l*i:8*l*(i+1)], maskRaw[8*l*i:8*l*(i+1)]
		putInt64s(row, s)
		for j := len(s); j < l; j++ {
			binary.LittleEndian.PutUint64(row[8*j:], uint64(e.cfg.PadID))
		}
		for j := range s {
			binary.LittleEndian.PutUint64(mrow[8*j:], 1) // padding stays 0
		}
	}
	shape := []int64{int64(n), int64(l)}
	req := &inferencepb.ModelInferRequest{
		ModelName:    e.cfg.Name,
		ModelVersion: e.cfg.Version,
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			{Name: e.cfg.InputIDsName, Datatype: textInputDatatype, Shape: shape},
			{Name: e.cfg.AttentionMaskName, Datatype: textInputDatatype, Shape: shape},
		},
		Outputs:          []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: e.cfg.OutputName}},
		RawInputContents: [][]byte{idsRaw, maskRaw},
	}
	resp, err := e.c.infer(ctx, e.cfg.ModelConfig, req)
	if err != nil {
		return nil, err
	}
	return decodeEmbeddings(resp, e.cfg.Name, e.cfg.OutputName, n, e.cfg.Dims)
}
