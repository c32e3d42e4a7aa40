package triton

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/resolver"
)

// replicaUp reads tusou_triton_replica_up per replica.
func replicaUp(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "tusou_triton_replica_up" {
			for _, m := range mf.GetMetric() {
				out[label(m, "replica")] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// TestReplicaStates: Replicas and tusou_triton_replica_up show each replica
// as the balancer sees it. One of two replicas stopped → it is not ready, the
// other is, and the client stays ready; both stopped → neither is ready and
// Ready fails; a replica gone from the resolver's answer leaves the map and
// its metric series; Close empties both.
func TestReplicaStates(t *testing.T) {
	cfg := DefaultConfig()
	c, res, reg, a, b := dialTwoReplicas(t, cfg, "replicastates")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	want := func(what string, states map[string]string, up map[string]float64) {
		t.Helper()
		for !maps.Equal(c.Replicas(), states) {
			if ctx.Err() != nil {
				t.Fatalf("%s: replicas %v, want %v", what, c.Replicas(), states)
			}
			time.Sleep(time.Millisecond)
		}
		if got := replicaUp(t, reg); !maps.Equal(got, up) {
			t.Errorf("%s: tusou_triton_replica_up %v, want %v", what, got, up)
		}
		t.Logf("%s: %v", what, states)
	}

	want("both ready", map[string]string{a.addr: "ready", b.addr: "ready"},
		map[string]float64{a.addr: 1, b.addr: 1})

	b.srv.Stop()
	want("B stopped", map[string]string{a.addr: "ready", b.addr: "transient_failure"},
		map[string]float64{a.addr: 1, b.addr: 0})
	if err := c.Ready(ctx); err != nil {
		t.Errorf("not ready with replica A up: %v", err)
	}

	a.srv.Stop()
	want("both stopped", map[string]string{a.addr: "transient_failure", b.addr: "transient_failure"},
		map[string]float64{a.addr: 0, b.addr: 0})
	if err := c.Ready(ctx); err == nil {
		t.Error("ready with both replicas stopped")
	} else {
		t.Logf("both stopped: Ready: %v", err)
	}

	// Scale-in: B's pod is gone from the headless Service's answer.
	res.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: a.addr}}})
	want("B removed", map[string]string{a.addr: "transient_failure"}, map[string]float64{a.addr: 0})

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want("closed", map[string]string{}, map[string]float64{})
}
