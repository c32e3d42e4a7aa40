package triton

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig invalid: %v", err)
	}
}

func TestValidateNamesEveryBadField(t *testing.T) {
	cfg := DefaultConfig()
	cfg.GRPCAddr = ""
	cfg.RequestTimeout = 0
	cfg.Keepalive.Time = time.Second
	cfg.Retry.MaxAttempts = 0
	cfg.Image.Batcher.MaxDelay = 0
	cfg.Image.Batcher.QueueSize = 4
	cfg.Text.AttentionMaskName = cfg.Text.InputIDsName
	cfg.Text.Batcher.MaxInflight = 0
	cfg.MaxRecvMsgBytes = 64 << 10
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	want := []string{
		"grpc_addr: must be set, e.g. 127.0.0.1:8001",
		"request_timeout: must be > 0, got 0s",
		"keepalive.time: must be 0 or >= 10s",
		"retry.max_attempts: must be >= 1 (1 = no retry), got 0",
		"image_model.batcher.max_delay: must be > 0, got 0s",
		fmt.Sprintf("image_model.batcher.queue_size: must be >= batcher.max_batch_size (%d) so a full batch can form, got 4", cfg.Image.Batcher.MaxBatchSize),
		fmt.Sprintf("image_model.batcher.max_batch_size: replies of %d x %d float32 need max_recv_msg_bytes >= %d, got %d",
			cfg.Image.Batcher.MaxBatchSize, cfg.Image.Dims, cfg.Image.Batcher.MaxBatchSize*cfg.Image.Dims*4+64<<10, cfg.MaxRecvMsgBytes),
		"text_model.attention_mask_name: must differ from input_ids_name \"input_ids\"",
		"text_model.batcher.max_inflight: must be > 0, got 0",
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, msg)
		}
	}
	if got := strings.Count(msg, "\n") + 1; got != len(want)+1 { // + text max_batch_size recv check
		t.Errorf("%d problems, want %d:\n%s", got, len(want)+1, msg)
	}
}

// The yaml names are the documented ones; unknown keys are rejected by the
// root config's strict decoding, so a typo here would break deployments.
func TestConfigYAML(t *testing.T) {
	src := `
grpc_addr: triton:8001
dial_timeout: 2s
request_timeout: 3s
max_recv_msg_bytes: 8388608
keepalive: {time: 1m, timeout: 5s}
retry: {max_attempts: 2}
image_model:
  name: clip_image_v2
  version: "3"
  input_name: pixel_values
  output_name: image_embeds
  dims: 768
  batcher: {max_batch_size: 64, max_delay: 5ms, queue_size: 512, max_inflight: 2}
text_model:
  name: clip_text_v2
  max_seq_len: 77
  batcher: {max_delay: 500us}
`
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if cfg.Image.Name != "clip_image_v2" || cfg.Image.Version != "3" || cfg.Image.Dims != 768 ||
		cfg.Image.Batcher.MaxDelay != 5*time.Millisecond || cfg.Image.Batcher.QueueSize != 512 ||
		cfg.Text.MaxSeqLen != 77 || cfg.Text.Batcher.MaxDelay != 500*time.Microsecond ||
		cfg.Text.Batcher.MaxBatchSize != DefaultConfig().Text.Batcher.MaxBatchSize || cfg.Keepalive.Time != time.Minute {
		t.Errorf("decoded %+v", cfg)
	}
	// pad_id is the tokenizer's, not a setting: configuring it is an error,
	// not a value silently overwritten at start-up.
	dec = yaml.NewDecoder(strings.NewReader("text_model: {pad_id: 1}\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err == nil || !strings.Contains(err.Error(), "pad_id") {
		t.Errorf("text_model.pad_id: want an unknown-field error, got %v", err)
	}
}
