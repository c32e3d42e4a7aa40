package triton

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// balancerName is the client's load-balancing policy: grpc-go's round_robin,
// wrapped to record what it knows about each replica (replicaTracker).
//
// Why the balancer's view and not a ServerReady probe per address: the
// balancer's connectivity state is what decides where batches go (round_robin
// picks only READY connections), it costs no RPC and no extra connection,
// and a per-address probe would need its own connections that could disagree
// with the ones carrying the traffic. Model readiness is still checked by
// Client.Ready over the balanced connection.
const balancerName = "tusou_round_robin"

func init() { balancer.Register(trackingBuilder{}) }

// trackers hands each client's replicaTracker to the balancer grpc builds for
// it: balancers are registered process-wide, so the client's service config
// names its tracker by id and ParseConfig (which grpc.NewClient calls once,
// for the default service config) swaps the id for the tracker. dial removes
// the entry once NewClient has returned.
var (
	trackerSeq atomic.Uint64
	trackers   sync.Map // uint64 → *replicaTracker
)

// serviceConfigFor is the client's gRPC service config, reporting to tracker
// id. It spreads ModelInfer calls over every address the target resolves to
// (round_robin: with several Triton replicas behind a headless Service, each
// batch goes to the next ready connection instead of the one pick_first
// would pin). A replica whose connection fails leaves the rotation until it
// reconnects; the batch in flight to it fails with Unavailable and is resent
// to another replica (RetryConfig). With one address (a plain host:port or a
// ClusterIP Service) it behaves like a single connection.
//
// No healthCheckConfig: gRPC client health checking uses the streaming
// grpc.health.v1.Health/Watch, which Triton (2.51, measured) does not
// implement (it answers Check only), so it would only log an error per
// connection and change nothing.
func serviceConfigFor(id uint64) string {
	return fmt.Sprintf(`{"loadBalancingConfig":[{%q:{"tracker":%d}}]}`, balancerName, id)
}

type trackingBuilder struct{}

func (trackingBuilder) Name() string { return balancerName }

func (trackingBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &trackingBalancer{}
	b.Balancer = balancer.Get(roundrobin.Name).Build(&trackingClientConn{ClientConn: cc, b: b}, opts)
	return b
}

// lbConfig is the parsed config of balancerName.
type lbConfig struct {
	serviceconfig.LoadBalancingConfig
	tracker *replicaTracker // nil: id unknown, balance without tracking
}

func (trackingBuilder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	var c struct {
		Tracker uint64 `json:"tracker"`
	}
	if err := json.Unmarshal(js, &c); err != nil {
		return nil, fmt.Errorf("%s config: %w", balancerName, err)
	}
	t, _ := trackers.Load(c.Tracker)
	tr, _ := t.(*replicaTracker)
	return &lbConfig{tracker: tr}, nil
}

// trackingBalancer is round_robin plus a tracker fed from its state updates.
type trackingBalancer struct {
	balancer.Balancer
	tracker atomic.Pointer[replicaTracker]
}

func (b *trackingBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	if c, ok := s.BalancerConfig.(*lbConfig); ok && c.tracker != nil {
		b.tracker.Store(c.tracker)
	}
	return b.Balancer.UpdateClientConnState(s)
}

func (b *trackingBalancer) Close() {
	b.Balancer.Close()
	b.tracker.Load().observe(nil) // the connection is closed: no replicas left
}

// trackingClientConn passes round_robin's state updates on to gRPC after
// reading the per-endpoint states its picker carries.
type trackingClientConn struct {
	balancer.ClientConn
	b *trackingBalancer
}

func (cc *trackingClientConn) UpdateState(s balancer.State) {
	cc.b.tracker.Load().observe(endpointsharding.ChildStatesFromPicker(s.Picker))
	cc.ClientConn.UpdateState(s)
}

// replicaTracker keeps the balancer's latest state of every replica (one per
// address the target resolves to), exports it as tusou_triton_replica_up and
// logs when a replica joins, leaves, or becomes ready or not ready.
type replicaTracker struct {
	log     *zap.Logger
	metrics *Metrics

	mu     sync.Mutex
	states map[string]connectivity.State
}

func newReplicaTracker(log *zap.Logger, m *Metrics) *replicaTracker {
	return &replicaTracker{log: log, metrics: m, states: map[string]connectivity.State{}}
}

// observe replaces the states with children's (nil: no replicas). Calls
// come from the balancer, one at a time.
func (t *replicaTracker) observe(children []endpointsharding.ChildState) {
	if t == nil {
		return
	}
	next := make(map[string]connectivity.State, len(children))
	for _, ch := range children {
		next[endpointAddr(ch.Endpoint)] = ch.State.ConnectivityState
	}
	t.mu.Lock()
	prev := t.states
	t.states = next
	t.mu.Unlock()

	for addr, s := range next {
		p, known := prev[addr]
		if known && p == s {
			continue
		}
		up := 0.0
		if s == connectivity.Ready {
			up = 1
		}
		t.metrics.replicaUp.WithLabelValues(addr).Set(up)
		switch {
		case !known:
			t.log.Info("Triton replica added", zap.String("replica", addr), zap.String("state", stateName(s)))
		case (p == connectivity.Ready) != (s == connectivity.Ready):
			// Readiness flips are what operators need; the steps in between
			// (idle, connecting) only at debug.
			t.log.Info("Triton replica state", zap.String("replica", addr), zap.String("from", stateName(p)), zap.String("state", stateName(s)))
		default:
			t.log.Debug("Triton replica state", zap.String("replica", addr), zap.String("from", stateName(p)), zap.String("state", stateName(s)))
		}
	}
	for addr := range prev {
		if _, ok := next[addr]; !ok {
			// A series per departed pod would pile up; the address is gone
			// from the resolver's answer, so is its series.
			t.metrics.replicaUp.DeleteLabelValues(addr)
			t.log.Info("Triton replica removed", zap.String("replica", addr))
		}
	}
}

// snapshot returns address → state name.
func (t *replicaTracker) snapshot() map[string]string {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]string, len(t.states))
	for addr, s := range t.states {
		out[addr] = stateName(s)
	}
	return out
}

// stateName is the state as /readyz shows it: ready, idle, connecting,
// transient_failure, shutdown.
func stateName(s connectivity.State) string { return strings.ToLower(s.String()) }

// endpointAddr names a replica by its address (DNS gives one per endpoint;
// an endpoint with several is one replica reachable several ways).
func endpointAddr(e resolver.Endpoint) string {
	addrs := make([]string, len(e.Addresses))
	for i, a := range e.Addresses {
		addrs[i] = a.Addr
	}
	return strings.Join(addrs, ",")
}
