package triton

import (
	"errors"
	"fmt"
	"time"
)

// Config configures the Triton client, the two CLIP models it calls and the
// client-side micro-batchers in front of them. The root config composes it
// under its own section name and prefixes the field names in Validate errors.
type Config struct {
	// GRPCAddr is Triton's gRPC endpoint, host:port (any grpc-go target).
	GRPCAddr string `yaml:"grpc_addr"`
	// DialTimeout bounds one connection attempt (TCP + HTTP/2 handshake).
	// Dial itself does not block: gRPC connects in the background and
	// reconnects on its own; Ready/WaitReady tell when Triton is usable.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ReconnectMaxBackoff caps the delay between reconnection attempts after
	// Triton goes away. grpc-go's own cap is 120s, far too long for a sidecar
	// whose only dependency just restarted.
	ReconnectMaxBackoff time.Duration `yaml:"reconnect_max_backoff"`
	// RequestTimeout caps one inference batch (all attempts together) when the
	// callers' deadlines are later or absent. The earliest caller deadline in a
	// batch always wins when it is sooner.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// DeadlineParam sends each batch's remaining deadline to Triton as the
	// "timeout" request parameter (microseconds), so Triton drops a request
	// from its queue once nobody waits for it instead of computing it late.
	// Triton honours it when the model's queue policy has
	// allow_timeout_override (the production configs do) and it is shorter
	// than the policy's default; otherwise it is ignored.
	DeadlineParam bool `yaml:"deadline_param"`
	// MaxRecvMsgBytes is the largest gRPC reply accepted. grpc-go's default is
	// 4 MiB; see DefaultConfig for the arithmetic.
	MaxRecvMsgBytes int `yaml:"max_recv_msg_bytes"`
	// Keepalive configures HTTP/2 pings that detect dead connections.
	Keepalive KeepaliveConfig `yaml:"keepalive"`
	// Retry configures retries of failed inference calls.
	Retry RetryConfig `yaml:"retry"`
	// Image is the image tower (clip_image).
	Image ImageModelConfig `yaml:"image_model"`
	// Text is the text tower (clip_text).
	Text TextModelConfig `yaml:"text_model"`
}

// KeepaliveConfig configures client-side HTTP/2 keepalive pings.
type KeepaliveConfig struct {
	// Time is the idle time after which the client pings. 0 disables pings.
	// Triton's server answers pings arriving more often than
	// --grpc-http2-min-recv-ping-interval-without-data (default 5 min) with
	// GOAWAY "too_many_pings" unless data flows, so keep pings rare.
	Time time.Duration `yaml:"time"`
	// Timeout is how long to wait for a ping ack before closing the connection.
	Timeout time.Duration `yaml:"timeout"`
	// PermitWithoutStream pings even with no RPC in flight. Triton refuses
	// such pings unless started with --grpc-keepalive-permit-without-calls=1.
	PermitWithoutStream bool `yaml:"permit_without_stream"`
}

// RetryConfig configures retries of inference calls that failed because the
// connection failed. Inference is idempotent, so a resend is safe; it only
// happens within the batch deadline. A full Triton queue is never retried
// here: the caller gets Overloaded with RetryAfter instead.
type RetryConfig struct {
	// MaxAttempts is the number of tries including the first (1 = no retry).
	MaxAttempts int `yaml:"max_attempts"`
	// InitialBackoff is the wait before the first retry; it doubles (with
	// jitter) up to MaxBackoff.
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	// MaxBackoff caps the wait between retries.
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// RetryAfter is the hint returned with Overloaded and Unavailable errors
	// (sent as Retry-After by the gateway).
	RetryAfter time.Duration `yaml:"retry_after"`
}

// ModelConfig is what tusou expects of one Triton model, checked against
// Triton's model metadata by Client.CheckModels.
type ModelConfig struct {
	// Name is the Triton model name.
	Name string `yaml:"name"`
	// Version is the model version; empty lets Triton choose by its version
	// policy (normally the latest).
	Version string `yaml:"version"`
	// OutputName is the embedding output tensor ([-1, Dims] FP32).
	OutputName string `yaml:"output_name"`
	// Dims is the embedding width.
	Dims int `yaml:"dims"`
	// Batcher configures the client-side micro-batcher for this model.
	Batcher BatcherConfig `yaml:"batcher"`
}

// Label names the model in metrics: its name, with "@version" when the
// version is pinned (two generations may serve two versions of one name).
func (m ModelConfig) Label() string {
	if m.Version == "" {
		return m.Name
	}
	return m.Name + "@" + m.Version
}

// ref is the model's identity (name and version) without its settings.
func (m ModelConfig) ref() ModelConfig { return ModelConfig{Name: m.Name, Version: m.Version} }

// ImageModelConfig describes the image tower: one FP32 CHW tensor in, one
// embedding out.
type ImageModelConfig struct {
	ModelConfig `yaml:",inline"`
	// InputName is the pixel tensor, FP32 [-1, Channels, Height, Width].
	InputName string `yaml:"input_name"`
	// Channels, Height and Width are the CHW sizes of one image tensor.
	Channels int `yaml:"channels"`
	Height   int `yaml:"height"`
	Width    int `yaml:"width"`
}

// TextModelConfig describes the text tower: token ids and an attention mask
// (INT64 [-1, -1]) in, one embedding out.
type TextModelConfig struct {
	ModelConfig `yaml:",inline"`
	// InputIDsName is the token id tensor.
	InputIDsName string `yaml:"input_ids_name"`
	// AttentionMaskName is the mask tensor (1 = token, 0 = padding).
	AttentionMaskName string `yaml:"attention_mask_name"`
	// MaxSeqLen is the longest accepted sequence, [CLS] and [SEP] included.
	// The tokenizer truncates to it; longer input is a caller bug.
	MaxSeqLen int `yaml:"max_seq_len"`
	// PadToMultiple rounds each batch's padded length up to a multiple of
	// this (capped at max_seq_len); 1 pads to the longest sequence exactly.
	// Triton only merges requests of equal shape, so a coarser length (e.g.
	// 16) lets its dynamic batcher merge batches from several gateways, at
	// the cost of computing masked padding.
	PadToMultiple int `yaml:"pad_to_multiple"`
	// PadID is the [PAD] token id used to pad shorter sequences in a batch.
	// It is not a setting: the gateway takes it from the tokenizer file
	// (app.Build), so it cannot disagree with the tokenizer.
	PadID int64 `yaml:"-"`
}

// BatcherConfig configures one dynamic micro-batcher.
type BatcherConfig struct {
	// MaxBatchSize is the most items sent in one ModelInfer call. Triton's
	// max_batch_size for the model must be at least this (CheckModels checks).
	MaxBatchSize int `yaml:"max_batch_size"`
	// MaxDelay is the longest the first item of a batch waits for company.
	// It only matters at low load: under load batches fill up (or wait for an
	// in-flight slot) before it expires.
	MaxDelay time.Duration `yaml:"max_delay"`
	// QueueSize bounds the items waiting for a batch; a full queue refuses at
	// once with Overloaded instead of growing memory and latency.
	QueueSize int `yaml:"queue_size"`
	// MaxInflight is the most batches in flight to Triton at once.
	MaxInflight int `yaml:"max_inflight"`
}

// Datatypes fixed by the encoders' wire format (the model contract); they are
// not configurable because the Go code encodes exactly these.
const (
	imageInputDatatype = "FP32"
	textInputDatatype  = "INT64"
	outputDatatype     = "FP32"
)

// DefaultConfig returns the defaults for the local stack and production CLIP
// ViT-B/32 (512-d) models.
func DefaultConfig() Config {
	return Config{
		GRPCAddr: "127.0.0.1:8001",
		// A connect on loopback or a cluster network takes milliseconds; 5s
		// covers DNS plus two lost TCP SYNs (retransmits at 1s and 3s).
		DialTimeout: 5 * time.Second,
		// Triton restarts (model reloads, pod moves) should be noticed within a
		// few seconds of it coming back.
		ReconnectMaxBackoff: 5 * time.Second,
		// A full image batch takes ~4 ms on a GPU but ~1-3 s on the CPU-only
		// local stack (ONNX Runtime ViT-B/32 ~12-15 img/s per core, batches of
		// up to 64 on a few cores).
		// Callers normally bring tighter deadlines; this bounds bulk jobs that
		// bring none, with room for the CPU stack.
		RequestTimeout: 10 * time.Second,
		DeadlineParam:  true,
		// A reply is [n, dims] FP32: 64 x 512 x 4 B = 128 KiB, so the 4 MiB
		// default only breaks past ~2,000 vectors per batch (or wider models:
		// 1024-d halves that). 16 MiB = 4,096 x 1024-d vectors with headroom,
		// so raising max_batch_size or swapping in a wider model does not fail
		// with "received message larger than max". Requests are not limited
		// by it (grpc-go sends up to 2 GiB; Triton accepts up to 2 GiB), and a
		// 64-image request is 64 x 602,112 B = 38.5 MB.
		MaxRecvMsgBytes: 16 << 20,
		Keepalive: KeepaliveConfig{
			// Pings only while an RPC is in flight and the link is silent for
			// 30s, i.e. a hung connection; stays well inside Triton's
			// 5-minute/2-strike ping policy.
			Time:                30 * time.Second,
			Timeout:             10 * time.Second,
			PermitWithoutStream: false,
		},
		Retry: RetryConfig{
			// One retry covers the common case (a connection reset by a Triton
			// restart or an idle-closed connection); a second one a quick
			// reconnect. More only burns the caller's deadline.
			MaxAttempts:    3,
			InitialBackoff: 50 * time.Millisecond,
			MaxBackoff:     500 * time.Millisecond,
			// Long enough for a full queue to drain a few batches, short enough
			// that clients come back while capacity is still there.
			RetryAfter: 1 * time.Second,
		},
		Image: ImageModelConfig{
			ModelConfig: ModelConfig{
				Name: "clip_image",
				// Pinned: during a model switch Triton serves two versions
				// (version_policy latest 2), and an unpinned gateway would
				// follow whichever loaded last, changing its vectors silently.
				Version:    "1",
				OutputName: "image_embeds",
				Dims:       512,
				Batcher: BatcherConfig{
					// 64 x 602 KB = 38.5 MB per request. Triton's clip_image
					// config allows 128 per execution so that its dynamic batcher
					// can merge two gateway batches (e.g. from two replicas).
					MaxBatchSize: 64,
					// Batch-1 GPU inference takes ~5.3 ms (187 img/s) and batch
					// 64 ~3.6 ms for all 64, so waiting 2 ms for company costs less
					// than one lone execution and only applies at low load.
					MaxDelay: 2 * time.Millisecond,
					// 256 queued tensors = 154 MB of pixels, the memory bound;
					// it is 4 full batches, ~15 ms of GPU work at 17.9k img/s.
					QueueSize: 256,
					// 4 x 64 = 256 images in flight = 2 full Triton executions of
					// 128: one running while the next is sent and queued. Request
					// buffers are pooled per in-flight batch (4 x 38.5 MB).
					MaxInflight: 4,
				},
			},
			InputName: "pixel_values",
			Channels:  3,
			Height:    224,
			Width:     224,
		},
		Text: TextModelConfig{
			ModelConfig: ModelConfig{
				Name:       "clip_text",
				Version:    "1",
				OutputName: "text_embeds",
				Dims:       512,
				Batcher: BatcherConfig{
					// A text batch is tiny on the wire (64 x 128 x 8 B x 2 =
					// 128 KiB); 64 is where the text tower reaches ~25k/s on a GPU,
					// and Triton's clip_text allows 256 so it can merge batches.
					MaxBatchSize: 64,
					// Text queries are interactive search: batch-1 inference is
					// ~2.1 ms (475/s), so wait at most half of that.
					MaxDelay: 1 * time.Millisecond,
					// Token ids are ~1 KiB per query; 1024 queued is ~1 MiB and
					// 16 full batches.
					QueueSize: 1024,
					// Same reasoning as the image tower.
					MaxInflight: 4,
				},
			},
			InputIDsName:      "input_ids",
			AttentionMaskName: "attention_mask",
			MaxSeqLen:         128,
			// Exact padding, as the model contract describes; raise it when
			// several gateways feed one Triton.
			PadToMultiple: 1,
			PadID:         0,
		},
	}
}

// Validate returns every problem at once (errors.Join), each naming the field
// by its yaml path within this section.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.GRPCAddr == "" {
		bad("grpc_addr", "must be set, e.g. 127.0.0.1:8001")
	}
	if c.DialTimeout <= 0 {
		bad("dial_timeout", "must be > 0, got %s", c.DialTimeout)
	}
	if c.ReconnectMaxBackoff <= 0 {
		bad("reconnect_max_backoff", "must be > 0, got %s", c.ReconnectMaxBackoff)
	}
	if c.RequestTimeout <= 0 {
		bad("request_timeout", "must be > 0, got %s", c.RequestTimeout)
	}
	if c.MaxRecvMsgBytes <= 0 {
		bad("max_recv_msg_bytes", "must be > 0, got %d", c.MaxRecvMsgBytes)
	}
	if c.Keepalive.Time < 0 {
		bad("keepalive.time", "must be >= 0 (0 disables pings), got %s", c.Keepalive.Time)
	}
	if c.Keepalive.Time > 0 && c.Keepalive.Time < 10*time.Second {
		bad("keepalive.time", "must be 0 or >= 10s (grpc-go minimum; Triton GOAWAYs frequent pings), got %s", c.Keepalive.Time)
	}
	if c.Keepalive.Time > 0 && c.Keepalive.Timeout <= 0 {
		bad("keepalive.timeout", "must be > 0 when keepalive.time is set, got %s", c.Keepalive.Timeout)
	}
	if c.Retry.MaxAttempts < 1 {
		bad("retry.max_attempts", "must be >= 1 (1 = no retry), got %d", c.Retry.MaxAttempts)
	}
	if c.Retry.MaxAttempts > 1 {
		if c.Retry.InitialBackoff <= 0 {
			bad("retry.initial_backoff", "must be > 0, got %s", c.Retry.InitialBackoff)
		}
		if c.Retry.MaxBackoff < c.Retry.InitialBackoff {
			bad("retry.max_backoff", "must be >= retry.initial_backoff (%s), got %s", c.Retry.InitialBackoff, c.Retry.MaxBackoff)
		}
	}
	if c.Retry.RetryAfter <= 0 {
		bad("retry.retry_after", "must be > 0, got %s", c.Retry.RetryAfter)
	}

	errs = append(errs, c.Image.ModelConfig.validate("image_model", c.MaxRecvMsgBytes)...)
	if c.Image.InputName == "" {
		bad("image_model.input_name", "must be set")
	}
	for _, d := range []struct {
		name string
		v    int
	}{{"channels", c.Image.Channels}, {"height", c.Image.Height}, {"width", c.Image.Width}} {
		if d.v <= 0 {
			bad("image_model."+d.name, "must be > 0, got %d", d.v)
		}
	}

	errs = append(errs, c.Text.ModelConfig.validate("text_model", c.MaxRecvMsgBytes)...)
	if c.Text.InputIDsName == "" {
		bad("text_model.input_ids_name", "must be set")
	}
	if c.Text.AttentionMaskName == "" {
		bad("text_model.attention_mask_name", "must be set")
	}
	if c.Text.InputIDsName != "" && c.Text.InputIDsName == c.Text.AttentionMaskName {
		bad("text_model.attention_mask_name", "must differ from input_ids_name %q", c.Text.InputIDsName)
	}
	if c.Text.MaxSeqLen <= 0 {
		bad("text_model.max_seq_len", "must be > 0, got %d", c.Text.MaxSeqLen)
	}
	if c.Text.PadToMultiple < 1 {
		bad("text_model.pad_to_multiple", "must be >= 1 (1 = pad to the longest sequence), got %d", c.Text.PadToMultiple)
	}
	return errors.Join(errs...)
}

func (m ModelConfig) validate(section string, maxRecv int) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", section, field, fmt.Sprintf(format, args...)))
	}
	if m.Name == "" {
		bad("name", "must be set")
	}
	if m.OutputName == "" {
		bad("output_name", "must be set")
	}
	if m.Dims <= 0 {
		bad("dims", "must be > 0, got %d", m.Dims)
	}
	b := m.Batcher
	if b.MaxBatchSize <= 0 {
		bad("batcher.max_batch_size", "must be > 0, got %d", b.MaxBatchSize)
	}
	if b.MaxDelay <= 0 {
		bad("batcher.max_delay", "must be > 0, got %s", b.MaxDelay)
	}
	if b.QueueSize < b.MaxBatchSize || b.QueueSize <= 0 {
		bad("batcher.queue_size", "must be >= batcher.max_batch_size (%d) so a full batch can form, got %d", b.MaxBatchSize, b.QueueSize)
	}
	if b.MaxInflight <= 0 {
		bad("batcher.max_inflight", "must be > 0, got %d", b.MaxInflight)
	}
	// The reply carries [max_batch_size, dims] float32 plus protobuf framing.
	if need := b.MaxBatchSize*m.Dims*4 + 64<<10; m.Dims > 0 && b.MaxBatchSize > 0 && maxRecv > 0 && need > maxRecv {
		bad("batcher.max_batch_size", "replies of %d x %d float32 need max_recv_msg_bytes >= %d, got %d", b.MaxBatchSize, m.Dims, need, maxRecv)
	}
	return errs
}
