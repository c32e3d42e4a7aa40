package app

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/embed"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/gateway"
	"github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/service"
	"github.com/tusou/tusou/tokenizer"
	"github.com/tusou/tusou/triton"
	"github.com/tusou/tusou/triton/inferencepb"
)

// instantTriton answers ModelInfer at once with n x 512 embeddings, so a
// benchmark measures the gateway's own work (HTTP, decode, tokenise, batch,
// gRPC encode/decode) and not model compute.
type instantTriton struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer
}

func (instantTriton) ModelInfer(_ context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	n := req.GetInputs()[0].GetShape()[0]
	out := "image_embeds"
	if req.GetModelName() == "clip_text" {
		out = "text_embeds"
	}
	raw := make([]byte, n*512*4)
	for i := 0; i < int(n)*512; i++ {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(float32(i%7)+1))
	}
	return &inferencepb.ModelInferResponse{
		ModelName:         req.GetModelName(),
		Outputs:           []*inferencepb.ModelInferResponse_InferOutputTensor{{Name: out, Datatype: "FP32", Shape: []int64{n, 512}}},
		RawOutputContents: [][]byte{raw},
	}, nil
}

// instantES answers every kNN search with ten canned hits.
func instantES() *httptest.Server {
	var hits []string
	for i := 0; i < 10; i++ {
		hits = append(hits, fmt.Sprintf(`{"_id":"id%d","_score":0.9,"_source":{"content_type":"image/jpeg","metadata":{"album":"a"}}}`, i))
	}
	body := `{"took":1,"timed_out":false,"hits":{"total":{"value":10,"relation":"eq"},"hits":[` + strings.Join(hits, ",") + `]}}`
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	}))
}

// overheadGateway builds the real gateway handler over instant fakes of
// Triton and Elasticsearch.
func overheadGateway(b *testing.B) http.Handler {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(256 << 20))
	inferencepb.RegisterGRPCInferenceServiceServer(gs, instantTriton{})
	go gs.Serve(lis)
	b.Cleanup(gs.Stop)
	es := instantES()
	b.Cleanup(es.Close)

	cfg := config.Default()
	cfg.Triton.GRPCAddr = lis.Addr().String()
	cfg.Elasticsearch.Addresses = []string{es.URL}
	reg := prometheus.NewRegistry()
	log := zap.NewNop()
	tc, err := triton.Dial(context.Background(), cfg.Triton, log, reg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tc.Close() })
	img, txt := triton.NewImageEncoder(tc), triton.NewTextEncoder(tc)
	b.Cleanup(func() { img.Close(context.Background()); txt.Close(context.Background()) })
	esc, err := esproxy.New(cfg.Elasticsearch, log, reg)
	if err != nil {
		b.Fatal(err)
	}
	pre, err := preprocess.New(cfg.Preprocess)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(testutil.Root(), "model_repository/tiny/clip_text/tokenizer.json"), 128)
	if err != nil {
		b.Fatal(err)
	}
	svc := service.New(service.Single(embed.NewImages(pre, img, pre.TensorLen(), embed.NewLimiter(4, 256, nil)), embed.NewTexts(tok, txt), esc), nil)
	return gateway.New(gateway.Deps{Config: cfg, Service: svc, Logger: log, Registry: reg, Gatherer: reg})
}

// runOverhead serves requests one after another and reports latency quantiles.
func runOverhead(b *testing.B, h http.Handler, newReq func() *http.Request) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := httptest.NewRecorder()
		req := newReq()
		start := time.Now()
		h.ServeHTTP(rec, req)
		lat = append(lat, time.Since(start))
		if rec.Code != 200 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// BenchmarkSearchTextOverhead: the gateway's own cost of a text search
// (HTTP, JSON, tokenisation, batching, gRPC, ES request and response),
// with Triton and Elasticsearch answering instantly.
func BenchmarkSearchTextOverhead(b *testing.B) {
	h := overheadGateway(b)
	body := []byte(`{"text":"一只猫坐在红色的沙发上 a cat on a red sofa","k":10}`)
	runOverhead(b, h, func() *http.Request {
		return httptest.NewRequest("POST", "/v1/search/text", bytes.NewReader(body))
	})
}

// BenchmarkSearchImageOverhead: the same for search by image, which
// includes decoding and preprocessing a 640x427 JPEG.
func BenchmarkSearchImageOverhead(b *testing.B) {
	h := overheadGateway(b)
	photo, err := os.ReadFile(filepath.Join(testutil.Root(), "model_repository/testdata/images/china_original.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	runOverhead(b, h, func() *http.Request {
		r := httptest.NewRequest("POST", "/v1/search/image", bytes.NewReader(photo))
		r.Header.Set("Content-Type", "image/jpeg")
		return r
	})
}
