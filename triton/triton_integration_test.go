//go:build integration

// Integration tests against the REAL local Triton (deploy/local/triton.sh up):
// gRPC on 127.0.0.1:8001 unless TUSOU_TRITON_GRPC_ADDR says otherwise. Run:
//
//	go test -tags integration -v ./triton/
//
// Expected vectors come from model_repository/testdata (the tiny models'
// reference outputs); they are compared only when the local stack serves the
// tiny models (no real export present), otherwise only shapes and batching
// invariants are checked.
package triton

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/triton/inferencepb"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	return testutil.Root()
}

// batchRecorder records the batch size of every ModelInfer the client sends.
type batchRecorder struct {
	mu    sync.Mutex
	sizes map[string][]int
}

func (r *batchRecorder) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if mi, ok := req.(*inferencepb.ModelInferRequest); ok && len(mi.GetInputs()) > 0 {
		r.mu.Lock()
		r.sizes[mi.GetModelName()] = append(r.sizes[mi.GetModelName()], int(mi.GetInputs()[0].GetShape()[0]))
		r.mu.Unlock()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (r *batchRecorder) take(model string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sizes[model]
	r.sizes[model] = nil
	return s
}

func integrationConfig() Config {
	cfg := DefaultConfig()
	if addr := os.Getenv("TUSOU_TRITON_GRPC_ADDR"); addr != "" {
		cfg.GRPCAddr = addr
	}
	// The local stack runs ONNX Runtime on a shared CPU.
	cfg.RequestTimeout = 60 * time.Second
	// The fixtures are tiny version 1's outputs; the stack also serves
	// version 2 (another generation), which an empty version would reach.
	cfg.Image.Version, cfg.Text.Version = "1", "1"
	return cfg
}

// connect dials the real Triton and waits (up to TUSOU_TRITON_WAIT, default
// 3m) for it and both models to be ready.
func connect(t *testing.T, cfg Config) (*Client, *batchRecorder, *prometheus.Registry) {
	t.Helper()
	rec := &batchRecorder{sizes: map[string][]int{}}
	reg := prometheus.NewRegistry()
	c, err := dial(context.Background(), cfg, zaptest.NewLogger(t), reg, grpc.WithChainUnaryInterceptor(rec.intercept))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	wait := 3 * time.Minute
	if s := os.Getenv("TUSOU_TRITON_WAIT"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			wait = d
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.WaitReady(ctx, time.Second); err != nil {
		t.Fatalf("Triton at %s not ready (start it with deploy/local/triton.sh up): %v", cfg.GRPCAddr, err)
	}
	return c, rec, reg
}

// servesTiny reports whether the local stack serves the tiny models whose
// reference outputs the fixtures hold, and why not otherwise.
func servesTiny(t *testing.T, model, fixtureSHA string) (bool, string) {
	root := repoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "model_repository", model, "1", "model.onnx")); err == nil {
		return false, "the local stack serves the real " + model + " export"
	}
	b, err := os.ReadFile(filepath.Join(root, "model_repository", "tiny", model, "1", "model.onnx"))
	if err != nil {
		return false, err.Error()
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != fixtureSHA {
		return false, "fixtures were made with another tiny " + model + " (model_sha256 differs); regenerate them"
	}
	return true, ""
}

// closeTo compares a vector with its reference: cosine and max abs diff
// relative to the reference's largest element (the fixtures allow 1e-4
// relative: ONNX Runtime picks kernels per machine and batch size).
func closeTo(got, want []float32) (float64, float64, bool) {
	if len(got) != len(want) {
		return 0, math.Inf(1), false
	}
	var dot, ng, nw, maxDiff, maxRef float64
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		dot += g * w
		ng += g * g
		nw += w * w
		maxDiff = max(maxDiff, math.Abs(g-w))
		maxRef = max(maxRef, math.Abs(w))
	}
	cos := dot / math.Sqrt(ng*nw)
	rel := maxDiff / maxRef
	return cos, rel, cos > 0.99999 && rel <= 1e-4
}

func TestIntegrationCheckModels(t *testing.T) {
	cfg := integrationConfig()
	c, _, _ := connect(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.CheckModels(ctx); err != nil {
		t.Fatalf("CheckModels: %v", err)
	}
	// What the server says about itself and the models, for the record.
	dump := func(what string, m proto.Message, err error) {
		if err != nil {
			t.Logf("%s: error %v", what, err)
			return
		}
		t.Logf("%s: %s", what, protojson.Format(m))
	}
	sm, err := c.RPC().ServerMetadata(ctx, &inferencepb.ServerMetadataRequest{})
	dump("ServerMetadata", sm, err)
	for _, name := range []string{cfg.Image.Name, cfg.Text.Name} {
		md, err := c.RPC().ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: name})
		dump("ModelMetadata "+name, md, err)
		mc, err := c.RPC().ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: name})
		dump("ModelConfig "+name, mc, err)
		if err == nil && len(mc.ProtoReflect().GetUnknown())+len(mc.GetConfig().ProtoReflect().GetUnknown()) > 0 {
			t.Logf("ModelConfig %s: %d bytes of fields not declared in triton/proto (ignored)", name, len(mc.GetConfig().ProtoReflect().GetUnknown()))
		}
	}
	idx, err := c.RPC().RepositoryIndex(ctx, &inferencepb.RepositoryIndexRequest{})
	dump("RepositoryIndex", idx, err)
}

type imageFixtures struct {
	ModelSHA256 string    `json:"model_sha256"`
	Mean        []float64 `json:"image_mean"`
	Std         []float64 `json:"image_std"`
	Images      []struct {
		File        string    `json:"file"`
		Crop        string    `json:"crop"`
		PixelSHA256 string    `json:"pixel_values_f32le_sha256"`
		Embeds      []float32 `json:"image_embeds"`
	} `json:"images"`
}

// pixelValues turns a fixture's 224x224 uint8 crop into the CLIP tensor the
// way the reference does (README "Reference definition (image)", step 9) and
// checks it against the recorded tensor hash, so the test feeds Triton
// exactly the reference input.
func pixelValues(t *testing.T, path string, mean, std []float64, wantSHA string) []float32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	px := make([]float32, 3*w*h)
	for y := range h {
		for x := range w {
			var rgb [3]uint8
			switch im := img.(type) {
			case *image.NRGBA:
				o := im.PixOffset(b.Min.X+x, b.Min.Y+y)
				rgb = [3]uint8{im.Pix[o], im.Pix[o+1], im.Pix[o+2]}
			case *image.RGBA:
				o := im.PixOffset(b.Min.X+x, b.Min.Y+y)
				rgb = [3]uint8{im.Pix[o], im.Pix[o+1], im.Pix[o+2]}
			default:
				r, g, bb, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
				rgb = [3]uint8{uint8(r >> 8), uint8(g >> 8), uint8(bb >> 8)}
			}
			for c := range 3 {
				v := float32(float64(rgb[c]) * (1.0 / 255))
				px[c*w*h+y*w+x] = (v - float32(mean[c])) / float32(std[c])
			}
		}
	}
	raw := make([]byte, 4*len(px))
	for i, v := range px {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != wantSHA {
		t.Fatalf("%s: tensor differs from the reference pixel_values (sha256 mismatch)", path)
	}
	return px
}

// Eight image tensors as ONE batched ModelInfer give [8,512], matching the
// reference embeddings when the tiny model is served.
func TestIntegrationImageBatch(t *testing.T) {
	cfg := integrationConfig()
	c, rec, _ := connect(t, cfg)
	root := repoRoot(t)
	var fx imageFixtures
	b, err := os.ReadFile(filepath.Join(root, "model_repository", "testdata", "expected", "images.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	if len(fx.Images) < 8 {
		t.Fatalf("only %d fixture images", len(fx.Images))
	}
	chosen := fx.Images[:8]
	pixels := make([][]float32, len(chosen))
	for i, im := range chosen {
		pixels[i] = pixelValues(t, filepath.Join(root, "model_repository", "testdata", "expected", im.Crop), fx.Mean, fx.Std, im.PixelSHA256)
	}

	enc := NewImageEncoder(c)
	defer enc.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vecs, err := enc.EmbedBatch(ctx, pixels)
	if err != nil {
		t.Fatalf("EmbedBatch: %v", err)
	}
	if sizes := rec.take(cfg.Image.Name); !slices.Equal(sizes, []int{8}) {
		t.Fatalf("ModelInfer batch sizes %v, want one call of 8", sizes)
	}
	if len(vecs) != 8 {
		t.Fatalf("%d vectors, want 8", len(vecs))
	}
	for i, v := range vecs {
		if len(v) != cfg.Image.Dims {
			t.Fatalf("vector %d has %d dims, want %d", i, len(v), cfg.Image.Dims)
		}
	}
	tiny, why := servesTiny(t, cfg.Image.Name, fx.ModelSHA256)
	if !tiny {
		t.Logf("not comparing with reference embeddings: %s", why)
		return
	}
	for i, im := range chosen {
		cos, rel, ok := closeTo(vecs[i], im.Embeds)
		t.Logf("%s: cosine %.7f, max rel diff %.2e vs reference", im.File, cos, rel)
		if !ok {
			t.Errorf("%s: embedding differs from the reference (cosine %.7f, rel %.2e)", im.File, cos, rel)
		}
	}
}

type textFixtures struct {
	ModelSHA256 string `json:"model_sha256"`
	PadID       int64  `json:"pad_id"`
	Texts       []struct {
		Name     string    `json:"name"`
		InputIDs []int64   `json:"input_ids"`
		Embeds   []float32 `json:"text_embeds"`
	} `json:"texts"`
}

func loadTexts(t *testing.T) textFixtures {
	t.Helper()
	var fx textFixtures
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "model_repository", "testdata", "texts.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	return fx
}

// Texts of different lengths in one batch: [n,512], and (tiny model) equal
// to the unpadded batch-1 references: padding plus the mask is exact.
func TestIntegrationTextBatch(t *testing.T) {
	cfg := integrationConfig()
	fx := loadTexts(t)
	cfg.Text.PadID = fx.PadID
	c, rec, _ := connect(t, cfg)
	enc := NewTextEncoder(c)
	defer enc.Close(context.Background())

	ids := make([][]int64, len(fx.Texts))
	lengths := map[int]bool{}
	for i, tx := range fx.Texts {
		ids[i] = tx.InputIDs
		lengths[len(tx.InputIDs)] = true
	}
	if len(lengths) < 3 {
		t.Fatalf("fixture texts have only %d distinct lengths", len(lengths))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vecs, err := enc.EmbedBatch(ctx, ids)
	if err != nil {
		t.Fatalf("EmbedBatch: %v", err)
	}
	sizes := rec.take(cfg.Text.Name)
	if len(sizes) != 1 || sizes[0] != len(ids) {
		t.Fatalf("ModelInfer batch sizes %v, want one call of %d", sizes, len(ids))
	}
	for i, v := range vecs {
		if len(v) != cfg.Text.Dims {
			t.Fatalf("vector %d has %d dims", i, len(v))
		}
	}
	tiny, why := servesTiny(t, cfg.Text.Name, fx.ModelSHA256)
	for i, tx := range fx.Texts {
		want := tx.Embeds
		if !tiny {
			// No reference for this model: the unbatched result is the reference.
			one, err := enc.Embed(ctx, tx.InputIDs)
			if err != nil {
				t.Fatal(err)
			}
			want = one
		}
		cos, rel, ok := closeTo(vecs[i], want)
		if !ok {
			t.Errorf("%s (%d ids): batched embedding differs (cosine %.7f, rel %.2e)", tx.Name, len(tx.InputIDs), cos, rel)
		}
	}
	if !tiny {
		t.Logf("compared with unbatched results, not fixtures: %s", why)
	}
}

// 50 concurrent single-image requests through the micro-batcher: every
// caller gets its own image's vector, in fewer ModelInfer calls than requests.
func TestIntegrationBatcherConcurrent(t *testing.T) {
	cfg := integrationConfig()
	cfg.Image.Batcher.MaxBatchSize = 16
	// One batch at a time: on the shared CPU stack several concurrent
	// batches can outwait Triton's 500 ms queue policy and be shed
	// (Overloaded), which is correct but not what this test is about.
	cfg.Image.Batcher.MaxInflight = 1
	c, rec, reg := connect(t, cfg)
	enc := NewImageEncoder(c)

	// Five distinct images, each sent ten times: equal inputs must give
	// (nearly, across batch sizes) equal outputs, and different inputs different ones.
	const n, distinct = 50, 5
	imgs := make([][]float32, distinct)
	for i := range imgs {
		imgs[i] = randomImage(cfg.Image, i)
	}
	vecs := make([][]float32, n)
	errs := make([]error, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vecs[i], errs[i] = enc.Embed(ctx, imgs[i%distinct])
		}()
	}
	wg.Wait()
	if err := enc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	sizes := rec.take(cfg.Image.Name)
	total := 0
	for _, s := range sizes {
		total += s
		if s > 16 {
			t.Errorf("batch of %d > max_batch_size 16", s)
		}
	}
	t.Logf("50 concurrent requests -> %d ModelInfer calls, batch sizes %v", len(sizes), sizes)
	if total != n {
		t.Errorf("%d images sent, want %d", total, n)
	}
	if len(sizes) >= n {
		t.Errorf("no batching: %d calls for %d requests", len(sizes), n)
	}
	if got := metricValue(t, reg, "tusou_triton_batch_size", map[string]string{"model": cfg.Image.Label()}); int(got) != len(sizes) {
		t.Errorf("batch_size metric count %v, want %d", got, len(sizes))
	}
	for i := range n {
		if _, _, ok := closeTo(vecs[i], vecs[i%distinct]); !ok {
			t.Errorf("request %d: same image, different vector", i)
		}
		if i < distinct && i > 0 {
			if cos, _, _ := closeTo(vecs[i], vecs[0]); cos > 0.999999 {
				t.Logf("images 0 and %d give nearly the same vector (cos %.7f): random tiny model", i, cos)
			}
		}
	}
}

// A model name Triton does not know: CheckModels names it and lists what the
// server has; inference fails with Unavailable triton_model_not_found.
func TestIntegrationWrongModelName(t *testing.T) {
	cfg := integrationConfig()
	cfg.Image.Name, cfg.Image.Version = "clip_image_does_not_exist", "" // a wrong name, not a wrong version
	c, _, _ := connect0(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.CheckModels(ctx)
	e := apierr.As(err)
	if e == nil || e.Code != CodeModelMismatch || !strings.Contains(err.Error(), `model "clip_image_does_not_exist" not found on Triton`) {
		t.Fatalf("CheckModels: %v", err)
	}
	t.Logf("CheckModels: %v", err)

	enc := NewImageEncoder(c)
	defer enc.Close(context.Background())
	_, err = enc.Embed(ctx, randomImage(cfg.Image, 1))
	if e := apierr.As(err); e == nil || e.Kind != apierr.Unavailable || e.Code != CodeModelNotFound {
		t.Fatalf("Embed: %v, want Unavailable %s", err, CodeModelNotFound)
	}
	t.Logf("Embed: %v", err)
	if e := apierr.As(c.Ready(ctx)); e == nil || e.Kind != apierr.Unavailable {
		t.Fatalf("Ready: %v, want Unavailable", e)
	}
}

// connect0 dials without waiting for the (deliberately broken) models, after
// checking the server itself is up.
func connect0(t *testing.T, cfg Config) (*Client, *batchRecorder, *prometheus.Registry) {
	t.Helper()
	good := integrationConfig()
	connect(t, good) // waits for the server with the real names
	rec := &batchRecorder{sizes: map[string][]int{}}
	reg := prometheus.NewRegistry()
	c, err := dial(context.Background(), cfg, zaptest.NewLogger(t), reg, grpc.WithChainUnaryInterceptor(rec.intercept))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, rec, reg
}

// Real Triton error replies map to the documented kinds: the messages are
// Triton's, not the fake's.
func TestIntegrationErrorMapping(t *testing.T) {
	cfg := integrationConfig()
	c, _, _ := connect(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	im := cfg.Image
	imageReq := func(shape []int64, datatype string, elemSize int) *inferencepb.ModelInferRequest {
		n := int64(elemSize)
		for _, d := range shape {
			n *= d
		}
		return &inferencepb.ModelInferRequest{
			ModelName: im.Name,
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{
				Name: im.InputName, Datatype: datatype, Shape: shape}},
			RawInputContents: [][]byte{make([]byte, n)},
		}
	}
	timeoutReq := imageReq([]int64{1, 3, 224, 224}, "FP32", 4)
	// 1us: expires while the request waits in Triton's dynamic-batching
	// queue (max_queue_delay is longer), honoured thanks to allow_timeout_override.
	timeoutReq.Parameters = map[string]*inferencepb.InferParameter{
		"timeout": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: 1}}}
	mc, err := c.RPC().ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: im.Name})
	if err != nil {
		t.Fatal(err)
	}
	tooMany := int64(mc.GetConfig().GetMaxBatchSize()) + 1
	versionReq := imageReq([]int64{1, 3, 224, 224}, "FP32", 4)
	versionReq.ModelVersion = "999"
	tests := []struct {
		name string
		req  *inferencepb.ModelInferRequest
		kind apierr.Kind
		code string
	}{
		{"wrong shape", imageReq([]int64{1, 3, 224, 223}, "FP32", 4), apierr.BadGateway, CodeUpstreamError},
		{"wrong datatype", imageReq([]int64{1, 3, 224, 224}, "FP16", 2), apierr.BadGateway, CodeUpstreamError},
		{"batch too large", imageReq([]int64{tooMany, 3, 224, 224}, "FP32", 4), apierr.BadGateway, CodeUpstreamError},
		// The 1us budget is not ours (ctx has 30s left): Triton shed it.
		{"queue timeout", timeoutReq, apierr.Overloaded, CodeOverloaded},
		{"unknown version", versionReq, apierr.Unavailable, CodeModelNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.RPC().ModelInfer(ctx, tt.req)
			if err == nil {
				t.Fatal("Triton accepted the request")
			}
			e, retry := mapError(ctx, im.Name, err, time.Second)
			t.Logf("Triton: %v\n-> %v %s retry=%v", err, e.Kind, e.Code, retry)
			if e.Kind != tt.kind || e.Code != tt.code || retry {
				t.Errorf("mapped to %v %s retry=%v, want %v %s no retry", e.Kind, e.Code, retry, tt.kind, tt.code)
			}
		})
	}
}
