package triton

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tusou/tusou/triton/inferencepb"
)

// fakeTriton is an in-process KServe v2 server for unit tests. By default it
// serves clip_image and clip_text exactly as the model contract describes and
// computes deterministic "embeddings" from the inputs (see fakeImageEmbed and
// fakeTextEmbed), so tests can compute the expected vectors themselves.
type fakeTriton struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer

	mu            sync.Mutex
	serverReady   bool
	models        map[string]*fakeModel
	noModelConfig bool // answer ModelConfig with UNIMPLEMENTED, like plain KServe servers
	// inferHook, when set, answers ModelInfer instead of the default.
	inferHook func(ctx context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error)
	calls     []inferCall
	// sent records the deadline of each outgoing ModelInfer as the client
	// set it (the server only sees it re-based on its own clock).
	sent []time.Time
}

func (f *fakeTriton) sentDeadlines() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.sent...)
}

func (f *fakeTriton) recordDeadline(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if strings.HasSuffix(method, "/ModelInfer") {
		d, _ := ctx.Deadline()
		f.mu.Lock()
		f.sent = append(f.sent, d)
		f.mu.Unlock()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

type fakeModel struct {
	meta  *inferencepb.ModelMetadataResponse
	cfg   *inferencepb.ModelConfig
	ready bool
}

// inferCall records one ModelInfer the fake received.
type inferCall struct {
	model    string
	batch    int
	shapes   [][]int64
	raw      [][]byte
	deadline time.Time // zero when the call had none
	params   map[string]*inferencepb.InferParameter
}

func tensor(name, dt string, shape ...int64) *inferencepb.ModelMetadataResponse_TensorMetadata {
	return &inferencepb.ModelMetadataResponse_TensorMetadata{Name: name, Datatype: dt, Shape: shape}
}

// newFakeTriton returns a fake serving the models of cfg as the contract
// says (max_batch_size 64).
func newFakeTriton(cfg Config) *fakeTriton {
	im, tm := cfg.Image, cfg.Text
	f := &fakeTriton{serverReady: true, models: map[string]*fakeModel{}}
	f.models[im.Name] = &fakeModel{ready: true,
		meta: &inferencepb.ModelMetadataResponse{Name: im.Name, Versions: []string{"1"}, Platform: "python",
			Inputs:  []*inferencepb.ModelMetadataResponse_TensorMetadata{tensor(im.InputName, "FP32", -1, int64(im.Channels), int64(im.Height), int64(im.Width))},
			Outputs: []*inferencepb.ModelMetadataResponse_TensorMetadata{tensor(im.OutputName, "FP32", -1, int64(im.Dims))}},
		cfg: &inferencepb.ModelConfig{Name: im.Name, MaxBatchSize: 64, Backend: "python",
			SchedulingChoice: &inferencepb.ModelConfig_DynamicBatching{DynamicBatching: &inferencepb.ModelDynamicBatching{MaxQueueDelayMicroseconds: 100}}},
	}
	f.models[tm.Name] = &fakeModel{ready: true,
		meta: &inferencepb.ModelMetadataResponse{Name: tm.Name, Versions: []string{"1"}, Platform: "python",
			Inputs: []*inferencepb.ModelMetadataResponse_TensorMetadata{
				tensor(tm.InputIDsName, "INT64", -1, -1), tensor(tm.AttentionMaskName, "INT64", -1, -1)},
			Outputs: []*inferencepb.ModelMetadataResponse_TensorMetadata{tensor(tm.OutputName, "FP32", -1, int64(tm.Dims))}},
		cfg: &inferencepb.ModelConfig{Name: tm.Name, MaxBatchSize: 64, Backend: "python"},
	}
	return f
}

func (f *fakeTriton) ServerReady(context.Context, *inferencepb.ServerReadyRequest) (*inferencepb.ServerReadyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &inferencepb.ServerReadyResponse{Ready: f.serverReady}, nil
}

func (f *fakeTriton) model(name string) (*fakeModel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.models[name]
	if !ok {
		// Real Triton answers an unknown model with UNAVAILABLE, not NOT_FOUND.
		return nil, status.Errorf(codes.Unavailable, "Request for unknown model: '%s' is not found", name)
	}
	return m, nil
}

func (f *fakeTriton) ModelReady(_ context.Context, r *inferencepb.ModelReadyRequest) (*inferencepb.ModelReadyResponse, error) {
	m, err := f.model(r.GetName())
	if err != nil {
		return nil, err
	}
	return &inferencepb.ModelReadyResponse{Ready: m.ready}, nil
}

func (f *fakeTriton) ModelMetadata(_ context.Context, r *inferencepb.ModelMetadataRequest) (*inferencepb.ModelMetadataResponse, error) {
	m, err := f.model(r.GetName())
	if err != nil {
		return nil, err
	}
	return m.meta, nil
}

func (f *fakeTriton) ModelConfig(_ context.Context, r *inferencepb.ModelConfigRequest) (*inferencepb.ModelConfigResponse, error) {
	if f.noModelConfig {
		return nil, status.Error(codes.Unimplemented, "unknown method ModelConfig")
	}
	m, err := f.model(r.GetName())
	if err != nil {
		return nil, err
	}
	return &inferencepb.ModelConfigResponse{Config: m.cfg}, nil
}

func (f *fakeTriton) RepositoryIndex(context.Context, *inferencepb.RepositoryIndexRequest) (*inferencepb.RepositoryIndexResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := &inferencepb.RepositoryIndexResponse{}
	for name := range f.models {
		r.Models = append(r.Models, &inferencepb.RepositoryIndexResponse_ModelIndex{Name: name, Version: "1", State: "READY"})
	}
	return r, nil
}

func (f *fakeTriton) ModelInfer(ctx context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	call := inferCall{model: req.GetModelName(), raw: req.GetRawInputContents(), params: req.GetParameters()}
	if d, ok := ctx.Deadline(); ok {
		call.deadline = d
	}
	for _, in := range req.GetInputs() {
		call.shapes = append(call.shapes, in.GetShape())
	}
	if len(call.shapes) > 0 && len(call.shapes[0]) > 0 {
		call.batch = int(call.shapes[0][0])
	}
	f.mu.Lock()
	f.calls = append(f.calls, call)
	hook := f.inferHook
	f.mu.Unlock()
	if hook != nil {
		return hook(ctx, req)
	}
	return f.defaultInfer(req)
}

// defaultInfer checks the request against the model metadata the way Triton
// does (names, datatypes, ranks, byte sizes) and computes the fake outputs.
func (f *fakeTriton) defaultInfer(req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	m, err := f.model(req.GetModelName())
	if err != nil {
		return nil, err
	}
	if len(req.GetRawInputContents()) != len(req.GetInputs()) {
		return nil, status.Errorf(codes.InvalidArgument, "expected %d raw inputs, got %d", len(req.GetInputs()), len(req.GetRawInputContents()))
	}
	var n int64 = -1
	byName := map[string][]byte{}
	shapes := map[string][]int64{}
	for i, in := range req.GetInputs() {
		var want *inferencepb.ModelMetadataResponse_TensorMetadata
		for _, t := range m.meta.GetInputs() {
			if t.GetName() == in.GetName() {
				want = t
			}
		}
		if want == nil {
			return nil, status.Errorf(codes.InvalidArgument, "unexpected inference input '%s' for model '%s'", in.GetName(), req.GetModelName())
		}
		if in.GetDatatype() != want.GetDatatype() || len(in.GetShape()) != len(want.GetShape()) {
			return nil, status.Errorf(codes.InvalidArgument, "input '%s': got %s %v, want %s %v", in.GetName(), in.GetDatatype(), in.GetShape(), want.GetDatatype(), want.GetShape())
		}
		elems := int64(1)
		for j, d := range in.GetShape() {
			if want.GetShape()[j] != -1 && want.GetShape()[j] != d {
				return nil, status.Errorf(codes.InvalidArgument, "input '%s' dim %d: got %d, want %d", in.GetName(), j, d, want.GetShape()[j])
			}
			elems *= d
		}
		size := int64(4)
		if in.GetDatatype() == "INT64" {
			size = 8
		}
		if int64(len(req.GetRawInputContents()[i])) != elems*size {
			return nil, status.Errorf(codes.InvalidArgument, "input '%s': %d bytes for shape %v", in.GetName(), len(req.GetRawInputContents()[i]), in.GetShape())
		}
		if n >= 0 && in.GetShape()[0] != n {
			return nil, status.Errorf(codes.InvalidArgument, "batch sizes differ between inputs")
		}
		n = in.GetShape()[0]
		if n > int64(m.cfg.GetMaxBatchSize()) {
			return nil, status.Errorf(codes.InvalidArgument, "inference request batch-size must be <= %d for '%s'", m.cfg.GetMaxBatchSize(), req.GetModelName())
		}
		byName[in.GetName()] = req.GetRawInputContents()[i]
		shapes[in.GetName()] = in.GetShape()
	}
	out := m.meta.GetOutputs()[0]
	dims := int(out.GetShape()[1])
	vecs := make([][]float32, n)
	switch len(req.GetInputs()) {
	case 1: // image
		raw := req.GetRawInputContents()[0]
		per := len(raw) / int(n)
		for i := range vecs {
			vecs[i] = fakeImageEmbed(decodeF32(raw[i*per:(i+1)*per]), dims)
		}
	case 2: // text
		ids := decodeI64(byName[m.meta.GetInputs()[0].GetName()])
		mask := decodeI64(byName[m.meta.GetInputs()[1].GetName()])
		l := int(shapes[m.meta.GetInputs()[0].GetName()][1])
		for i := range vecs {
			var kept []int64
			for j := 0; j < l; j++ {
				if mask[i*l+j] == 1 {
					kept = append(kept, ids[i*l+j])
				}
			}
			vecs[i] = fakeTextEmbed(kept, dims)
		}
	}
	return embedResponse(req.GetModelName(), out.GetName(), vecs, dims), nil
}

func embedResponse(model, output string, vecs [][]float32, dims int) *inferencepb.ModelInferResponse {
	raw := make([]byte, 0, 4*len(vecs)*dims)
	for _, v := range vecs {
		for _, x := range v {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(x))
		}
	}
	return &inferencepb.ModelInferResponse{
		ModelName: model, ModelVersion: "1",
		Outputs: []*inferencepb.ModelInferResponse_InferOutputTensor{{
			Name: output, Datatype: "FP32", Shape: []int64{int64(len(vecs)), int64(dims)}}},
		RawOutputContents: [][]byte{raw},
	}
}

// fakeImageEmbed is the fake image model: the first dims pixel values, so a
// result shows which input it came from.
func fakeImageEmbed(px []float32, dims int) []float32 {
	v := make([]float32, dims)
	for k := range v {
		v[k] = px[k%len(px)]
	}
	return v
}

// fakeTextEmbed is the fake text model over the unpadded tokens: a vector
// that changes with every id and with the length.
func fakeTextEmbed(ids []int64, dims int) []float32 {
	v := make([]float32, dims)
	for k := range v {
		var s float64
		for j, id := range ids {
			s += float64(id) * float64((j+k)%7+1)
		}
		v[k] = float32(s) + float32(len(ids))
	}
	return v
}

func decodeF32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func decodeI64(b []byte) []int64 {
	v := make([]int64, len(b)/8)
	for i := range v {
		v[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return v
}

func (f *fakeTriton) inferCalls() []inferCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]inferCall(nil), f.calls...)
}

// testConfig is DefaultConfig with small, fast settings for unit tests.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.GRPCAddr = "passthrough:///bufnet"
	cfg.Retry.InitialBackoff = time.Millisecond
	cfg.Retry.MaxBackoff = 2 * time.Millisecond
	return cfg
}

// startFake serves f over an in-memory listener and dials it with cfg.
// The returned registry holds the client's metrics.
func startFake(t testing.TB, f *fakeTriton, cfg Config) (*Client, *prometheus.Registry) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(math.MaxInt32))
	inferencepb.RegisterGRPCInferenceServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	reg := prometheus.NewRegistry()
	c, err := dial(context.Background(), cfg, zaptest.NewLogger(t), reg,
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithUnaryInterceptor(f.recordDeadline))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, reg
}

// randomImage returns a CHW tensor with distinct values derived from seed.
func randomImage(cfg ImageModelConfig, seed int) []float32 {
	px := make([]float32, cfg.Channels*cfg.Height*cfg.Width)
	for i := range px {
		px[i] = float32(seed) + float32(i%997)/997
	}
	return px
}

func sliceEq(a, b []float32) error {
	if len(a) != len(b) {
		return fmt.Errorf("length %d != %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Errorf("index %d: %v != %v", i, a[i], b[i])
		}
	}
	return nil
}

// metricValue returns the value of the counter or gauge name with the given
// label values (all must match), or, for a histogram, its sample count.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, fam := range fams {
		if fam.GetName() != name {
			continue
		}
	metrics:
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// waitFor polls cond until it holds; the test's own timeout bounds it (no
// wall-clock thresholds in unit tests).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	// Not a performance bound: a condition that cannot come true any more
	// fails the test with its name instead of hanging until go test's
	// 10-minute timeout.
	giveUp := time.Now().Add(time.Minute)
	for !cond() {
		if t.Context().Err() != nil || time.Now().After(giveUp) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
