package tune

import (
	"context"
	"errors"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/embed"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/triton"
)

// NewPipelineFactory returns a factory that builds, for each setting, the
// gateway's own image path as app.Build wires it: the decode pool
// (decode.workers, decode.queue_size), the preprocessor, a Triton client and
// the image encoder whose micro-batcher runs with the setting's knobs (the
// rest of triton.* from cfg). Each step gets a fresh client and registry so
// its batch statistics are its own.
func NewPipelineFactory(cfg *config.Config, log *zap.Logger) (PipelineFactory, error) {
	pre, err := preprocess.New(cfg.Preprocess)
	if err != nil {
		return nil, err
	}
	workers := cfg.Decode.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	return func(ctx context.Context, s Setting) (Pipeline, error) {
		tc := cfg.Triton
		b := &tc.Image.Batcher
		b.MaxBatchSize, b.MaxDelay, b.MaxInflight = s.MaxBatch, s.MaxDelay, s.MaxInflight
		// A queue shorter than one batch cannot form that batch; the
		// configured queue is kept otherwise, so refusals are the real ones.
		b.QueueSize = max(b.QueueSize, s.MaxBatch)
		reg := prometheus.NewRegistry()
		client, err := triton.Dial(ctx, tc, log, reg)
		if err != nil {
			return nil, err
		}
		if err := client.WaitReady(ctx, 200*time.Millisecond); err != nil {
			client.Close()
			return nil, err
		}
		enc := triton.NewImageEncoder(client)
		limiter := embed.NewLimiter(workers, cfg.Decode.QueueSize, nil)
		return &pipeline{
			images: embed.NewImages(pre, enc, pre.TensorLen(), limiter),
			enc:    enc, client: client, reg: reg, model: tc.Image.Name,
		}, nil
	}, nil
}

type pipeline struct {
	images *embed.Images
	enc    *triton.ImageEncoder
	client *triton.Client
	reg    *prometheus.Registry
	model  string
}

func (p *pipeline) Embed(ctx context.Context, data []byte) error {
	_, _, err := p.images.Embed(ctx, data)
	return err
}

// BatchStats reads the encoder's tusou_triton_batch_size histogram, the
// same series the gateway exports.
func (p *pipeline) BatchStats() (batches, items float64) {
	mfs, err := p.reg.Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		if mf.GetName() != "tusou_triton_batch_size" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" && l.GetValue() == p.model {
					return float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	return 0, 0
}

func (p *pipeline) Close(ctx context.Context) error {
	return errors.Join(p.enc.Close(ctx), p.client.Close())
}
