package triton

import (
	"context"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/tusou/tusou/triton/inferencepb"
)

// replica is one fake Triton served over real TCP.
type replica struct {
	fake *fakeTriton
	srv  *grpc.Server
	addr string
}

// dialTwoReplicas starts two replicas behind a resolver that answers with
// both addresses, as DNS does for a headless Service
// (dns:///tusou-triton-headless:8001 in production), and returns a ready
// client balancing over them; the client is closed when the test ends.
func dialTwoReplicas(t *testing.T, cfg Config, scheme string) (*Client, *manual.Resolver, *prometheus.Registry, *replica, *replica) {
	t.Helper()
	a, b := startReplica(t, cfg), startReplica(t, cfg)
	res := manual.NewBuilderWithScheme(scheme)
	res.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: a.addr}, {Addr: b.addr}}})
	cfg.GRPCAddr = scheme + ":///triton"
	reg := prometheus.NewRegistry()
	c, err := dial(context.Background(), cfg, zaptest.NewLogger(t), reg, grpc.WithResolvers(res))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	return c, res, reg, a, b
}

func startReplica(t *testing.T, cfg Config) *replica {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{fake: newFakeTriton(cfg), srv: grpc.NewServer(grpc.MaxRecvMsgSize(math.MaxInt32)),
		addr: lis.Addr().String()}
	inferencepb.RegisterGRPCInferenceServiceServer(r.srv, r.fake)
	go func() { _ = r.srv.Serve(lis) }()
	t.Cleanup(r.srv.Stop)
	return r
}

func (r *replica) batches() int { return len(r.fake.inferCalls()) }

// replicaCounts reads tusou_triton_replica_requests_total{outcome="ok"} per replica.
func replicaCounts(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "tusou_triton_replica_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label(m, "outcome") == "ok" {
				out[label(m, "replica")] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestBatchesSpreadOverReplicas: with a target that resolves to two Triton
// replicas, batches go to both (round_robin), and a replica killed under load costs no
// request (the attempts in flight to it are resent to the other one) while
// the client stays ready; a replica added to the resolver's answer joins.
func TestBatchesSpreadOverReplicas(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Retry.InitialBackoff = time.Millisecond
	cfg.Retry.MaxBackoff = 5 * time.Millisecond
	cfg.Image.Batcher.MaxBatchSize = 4
	cfg.Image.Batcher.MaxDelay = time.Millisecond
	cfg.Image.Batcher.MaxInflight = 4
	c, res, reg, a, b := dialTwoReplicas(t, cfg, "replicas")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	enc := NewImageEncoder(c)
	defer enc.Close(context.Background())

	embed := func(n, conc int) (failed int64) {
		var wg sync.WaitGroup
		var next, fails atomic.Int64
		for range conc {
			wg.Go(func() {
				for i := next.Add(1); i <= int64(n); i = next.Add(1) {
					if _, err := enc.Embed(ctx, randomImage(cfg.Image, int(i))); err != nil {
						t.Logf("embed %d: %v", i, err)
						fails.Add(1)
					}
				}
			})
		}
		wg.Wait()
		return fails.Load()
	}

	// 1. Both replicas get batches.
	if f := embed(64, 8); f != 0 {
		t.Fatalf("%d of 64 embeds failed with both replicas up", f)
	}
	na, nb := a.batches(), b.batches()
	counts := replicaCounts(t, reg)
	t.Logf("both up: replica A %d batches, replica B %d; metric %v", na, nb, counts)
	if na == 0 || nb == 0 {
		t.Fatalf("batches not spread: A %d, B %d", na, nb)
	}
	if counts[a.addr] != float64(na) || counts[b.addr] != float64(nb) {
		t.Errorf("per-replica metric %v, want %s=%d %s=%d", counts, a.addr, na, b.addr, nb)
	}

	// 2. A is killed under load: no request fails; afterwards everything
	// goes to B and the client is ready.
	var fails atomic.Int64
	var wg sync.WaitGroup
	loadCtx, stopLoad := context.WithCancel(ctx)
	var sent atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := 0; loadCtx.Err() == nil; i++ {
				sent.Add(1)
				if _, err := enc.Embed(ctx, randomImage(cfg.Image, w*100000+i)); err != nil {
					t.Logf("embed under kill: %v", err)
					fails.Add(1)
				}
			}
		})
	}
	waitFor(t, "load on A", func() bool { return a.batches() > na+20 })
	a.srv.Stop() // hard stop: connections closed, in-flight RPCs fail
	killedAt := b.batches()
	waitFor(t, "B to carry the load", func() bool { return b.batches() > killedAt+20 })
	stopLoad()
	wg.Wait()
	t.Logf("kill under load: %d embeds, %d failed; A %d batches in all, B %d; retries %v",
		sent.Load(), fails.Load(), a.batches(), b.batches(), metricValue(t, reg, "tusou_triton_retries_total", nil))
	if fails.Load() != 0 {
		t.Errorf("%d embeds failed when one of two replicas was killed", fails.Load())
	}
	if err := c.Ready(ctx); err != nil {
		t.Errorf("not ready with one replica left: %v", err)
	}

	// 3. A new replica appears in the resolver's answer (scale-out): it
	// gets batches without a restart.
	d := startReplica(t, cfg)
	res.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: b.addr}, {Addr: d.addr}}})
	waitFor(t, "the new replica to get batches", func() bool {
		embed(16, 4)
		return d.batches() > 0
	})
}
