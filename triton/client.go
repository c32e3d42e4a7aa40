package triton

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/triton/inferencepb"
)

// Client is a KServe v2 gRPC client for Triton with the project's error
// mapping, retries and metrics. It is safe for concurrent use. Encoders
// (NewImageEncoder, NewTextEncoder) add micro-batching on top.
type Client struct {
	cfg     Config
	conn    *grpc.ClientConn
	rpc     inferencepb.GRPCInferenceServiceClient
	log     *zap.Logger
	metrics *Metrics
	// replicas is the balancer's view of each Triton replica.
	replicas *replicaTracker
	// models are those encoders were created for (Ready checks them).
	modelsMu sync.Mutex
	models   []ModelConfig
}

// Dial validates cfg and creates the client. It does not wait for Triton:
// gRPC connects in the background (each attempt bounded by dial_timeout) and
// reconnects after failures, so the gateway can start before Triton and
// report not-ready meanwhile. Use Ready/WaitReady and CheckModels at start-up.
// reg receives the tusou_triton_* metrics (nil: not registered).
func Dial(ctx context.Context, cfg Config, logger *zap.Logger, reg prometheus.Registerer) (*Client, error) {
	return dial(ctx, cfg, logger, reg)
}

// dial is Dial with extra options (tests pass an in-memory dialer).
func dial(ctx context.Context, cfg Config, logger *zap.Logger, reg prometheus.Registerer, extra ...grpc.DialOption) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("triton config: %w", err)
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	log := logger.With(zap.String("component", "triton"), zap.String("grpc_addr", cfg.GRPCAddr))
	metrics := NewMetrics(reg)
	replicas := newReplicaTracker(log, metrics)
	trackerID := trackerSeq.Add(1)
	trackers.Store(trackerID, replicas)
	// NewClient has parsed the service config (and taken the tracker) when
	// it returns.
	defer trackers.Delete(trackerID)
	bo := backoff.DefaultConfig
	bo.MaxDelay = cfg.ReconnectMaxBackoff
	opts := []grpc.DialOption{
		// Triton speaks plaintext gRPC inside the cluster; TLS, if any, is
		// terminated by the mesh.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgBytes)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: cfg.DialTimeout}),
		grpc.WithUserAgent("tusou"),
		grpc.WithDefaultServiceConfig(serviceConfigFor(trackerID)),
		grpc.WithResolvers(newRefreshingDNS(dnsRefresh)),
	}
	if cfg.Keepalive.Time > 0 {
		opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                cfg.Keepalive.Time,
			Timeout:             cfg.Keepalive.Timeout,
			PermitWithoutStream: cfg.Keepalive.PermitWithoutStream,
		}))
	}
	opts = append(opts, extra...)
	conn, err := grpc.NewClient(cfg.GRPCAddr, opts...)
	if err != nil {
		return nil, fmt.Errorf("triton: grpc_addr %q: %w", cfg.GRPCAddr, err)
	}
	conn.Connect() // start connecting now, not at the first call
	return &Client{
		cfg:      cfg,
		conn:     conn,
		rpc:      inferencepb.NewGRPCInferenceServiceClient(conn),
		log:      log,
		metrics:  metrics,
		replicas: replicas,
	}, nil
}

// Close closes the connection; calls in flight fail. Close the encoders
// first so their queues drain.
func (c *Client) Close() error {
	return c.conn.Close()
}

// Config returns the configuration the client was created with.
func (c *Client) Config() Config { return c.cfg }

// RPC returns the raw generated client, for tools and tests that need an RPC
// this package does not wrap. Errors from it are not mapped.
func (c *Client) RPC() inferencepb.GRPCInferenceServiceClient { return c.rpc }

// withDefaultTimeout bounds ctx by request_timeout when it has no deadline.
func (c *Client) withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.RequestTimeout)
}

// Ready returns nil when the Triton server is ready and both models are
// ready, else an *apierr.Error (Unavailable, Timeout, ...) naming what is not.
// It is cheap (three small RPCs) and meant for the readiness probe.
func (c *Client) Ready(ctx context.Context) error {
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	sr, err := c.rpc.ServerReady(ctx, &inferencepb.ServerReadyRequest{})
	if err != nil {
		e, _ := mapError(ctx, "", err, c.cfg.Retry.RetryAfter)
		return e
	}
	if !sr.GetReady() {
		return apierr.New(apierr.Unavailable, CodeNotReady, "Triton server is not ready").WithRetryAfter(c.cfg.Retry.RetryAfter)
	}
	for _, m := range c.servedModels() {
		mr, err := c.rpc.ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: m.Name, Version: m.Version})
		if err != nil {
			e, _ := mapError(ctx, m.Name, err, c.cfg.Retry.RetryAfter)
			return e
		}
		if !mr.GetReady() {
			return apierr.New(apierr.Unavailable, CodeNotReady, "Triton model %s is not ready", modelRef(m)).WithRetryAfter(c.cfg.Retry.RetryAfter)
		}
	}
	return nil
}

// Replicas returns the state of every Triton replica (address → state) as
// the client's load balancer sees it: "ready" replicas get batches;
// "connecting", "idle" and "transient_failure" ones get none until they
// reconnect. Ready succeeds while at least one replica is ready (and serves
// the models). It is a snapshot, for the readiness answer.
func (c *Client) Replicas() map[string]string { return c.replicas.snapshot() }

// WaitReady polls Ready every interval until it succeeds or ctx ends, and
// returns the last error then. For start-up: Triton may still be loading.
func (c *Client) WaitReady(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, max(interval, c.cfg.DialTimeout))
		err := c.Ready(actx)
		cancel()
		if err == nil {
			return nil
		}
		if attempt == 1 || attempt%10 == 0 {
			c.log.Info("waiting for Triton", zap.Int("attempt", attempt), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("triton not ready after %d attempts: %w", attempt, err)
		case <-t.C:
		}
	}
}

// tensorSpec is one expected tensor: name, datatype, full shape (batch -1).
type tensorSpec struct {
	name     string
	datatype string
	shape    []int64
}

func (t tensorSpec) String() string { return t.datatype + " " + formatShape(t.shape) }

func formatShape(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// track records a model an encoder calls, for Ready.
func (c *Client) track(m ModelConfig) {
	c.modelsMu.Lock()
	defer c.modelsMu.Unlock()
	if !slices.Contains(c.models, m.ref()) {
		c.models = append(c.models, m.ref())
	}
	c.metrics.initModel(m.Label())
}

// servedModels are the models Ready checks: those encoders were created
// for, else the configured pair.
func (c *Client) servedModels() []ModelConfig {
	c.modelsMu.Lock()
	defer c.modelsMu.Unlock()
	if len(c.models) > 0 {
		return slices.Clone(c.models)
	}
	return []ModelConfig{c.cfg.Image.ModelConfig.ref(), c.cfg.Text.ModelConfig.ref()}
}

func imageSpecs(im ImageModelConfig) (in, out []tensorSpec) {
	return []tensorSpec{{im.InputName, imageInputDatatype, []int64{-1, int64(im.Channels), int64(im.Height), int64(im.Width)}}},
		[]tensorSpec{{im.OutputName, outputDatatype, []int64{-1, int64(im.Dims)}}}
}

func textSpecs(tm TextModelConfig) (in, out []tensorSpec) {
	return []tensorSpec{
			{tm.InputIDsName, textInputDatatype, []int64{-1, -1}},
			{tm.AttentionMaskName, textInputDatatype, []int64{-1, -1}},
		},
		[]tensorSpec{{tm.OutputName, outputDatatype, []int64{-1, int64(tm.Dims)}}}
}

// CheckModels compares both models as Triton serves them with the
// configuration: tensor names, datatypes and shapes from ModelMetadata, and
// max_batch_size from ModelConfig when the server implements it (Triton
// does; plain KServe servers may not). Every difference is reported, each
// naming the model and tensor, e.g.
//
//	clip_image: input "pixel_values": config says FP32 [-1,3,224,224], server has FP16 [-1,3,224,224]
//
// The error is an *apierr.Error with code triton_model_mismatch wrapping the
// joined differences, or the mapped RPC error when Triton cannot be asked.
func (c *Client) CheckModels(ctx context.Context) error {
	return c.CheckModelsFor(ctx, []ImageModelConfig{c.cfg.Image}, []TextModelConfig{c.cfg.Text})
}

// CheckModelsFor is CheckModels for the given models (every generation's).
func (c *Client) CheckModelsFor(ctx context.Context, images []ImageModelConfig, texts []TextModelConfig) error {
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	var problems []error
	type check struct {
		cfg     ModelConfig
		in, out []tensorSpec
	}
	var checks []check
	for _, m := range images {
		in, out := imageSpecs(m)
		checks = append(checks, check{m.ModelConfig, in, out})
	}
	for _, m := range texts {
		in, out := textSpecs(m)
		checks = append(checks, check{m.ModelConfig, in, out})
	}
	for _, m := range checks {
		p, err := c.checkModel(ctx, m.cfg, m.in, m.out)
		if err != nil {
			return err
		}
		problems = append(problems, p...)
	}
	if len(problems) > 0 {
		return apierr.Wrap(errors.Join(problems...), apierr.Unavailable, CodeModelMismatch,
			"Triton models do not match the configuration").WithRetryAfter(c.cfg.Retry.RetryAfter)
	}
	return nil
}

// checkModel returns the differences for one model, or an error when the
// model cannot be inspected at all (other than "not found", a difference).
func (c *Client) checkModel(ctx context.Context, m ModelConfig, wantIn, wantOut []tensorSpec) ([]error, error) {
	var problems []error
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf("%s: %s", m.Name, fmt.Sprintf(format, args...)))
	}
	md, err := c.rpc.ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: m.Name, Version: m.Version})
	if err != nil {
		e, _ := mapError(ctx, m.Name, err, c.cfg.Retry.RetryAfter)
		if e.Code == CodeModelNotFound {
			bad("model %s not found on Triton at %s%s", modelRef(m), c.cfg.GRPCAddr, c.availableModels(ctx))
			return problems, nil
		}
		return nil, e
	}
	if m.Version != "" && len(md.GetVersions()) > 0 && !slices.Contains(md.GetVersions(), m.Version) {
		bad("config says version %s, server has versions %v", m.Version, md.GetVersions())
	}

	// ModelConfig is a Triton extension: optional inputs and max_batch_size.
	var mc *inferencepb.ModelConfig
	cr, err := c.rpc.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: m.Name, Version: m.Version})
	switch {
	case err == nil:
		mc = cr.GetConfig()
	case status.Code(err) == codes.Unimplemented:
		c.log.Info("Triton does not implement ModelConfig; max_batch_size not checked", zap.String("model", m.Name))
	default:
		e, _ := mapError(ctx, m.Name, err, c.cfg.Retry.RetryAfter)
		return nil, e
	}

	compare := func(kind string, want []tensorSpec, have []*inferencepb.ModelMetadataResponse_TensorMetadata) {
		for _, w := range want {
			i := slices.IndexFunc(have, func(t *inferencepb.ModelMetadataResponse_TensorMetadata) bool { return t.GetName() == w.name })
			if i < 0 {
				bad("%s %q: config says %s, server has no such %s (server %ss: %s)", kind, w.name, w, kind, kind, describeTensors(have))
				continue
			}
			h := tensorSpec{have[i].GetName(), have[i].GetDatatype(), have[i].GetShape()}
			if h.datatype != w.datatype || !slices.Equal(h.shape, w.shape) {
				bad("%s %q: config says %s, server has %s", kind, w.name, w, h)
			}
		}
	}
	compare("input", wantIn, md.GetInputs())
	compare("output", wantOut, md.GetOutputs())
	// Triton refuses a request that lacks a required input.
	for _, h := range md.GetInputs() {
		if slices.ContainsFunc(wantIn, func(w tensorSpec) bool { return w.name == h.GetName() }) || optionalInput(mc, h.GetName()) {
			continue
		}
		bad("input %q (%s %s) is required by the server but not sent by tusou", h.GetName(), h.GetDatatype(), formatShape(h.GetShape()))
	}

	fields := []zap.Field{zap.String("model", m.Name), zap.Strings("versions", md.GetVersions()), zap.String("platform", md.GetPlatform())}
	if mc != nil {
		want := m.Batcher.MaxBatchSize
		switch got := int(mc.GetMaxBatchSize()); {
		case got == 0:
			bad("server max_batch_size is 0 (no batching), but tusou sends batches of up to %d (batcher.max_batch_size)", want)
		case got < want:
			bad("server max_batch_size %d < batcher.max_batch_size %d: larger batches would be refused", got, want)
		}
		fields = append(fields, zap.Int32("server_max_batch_size", mc.GetMaxBatchSize()), zap.String("backend", mc.GetBackend()))
		if db := mc.GetDynamicBatching(); db != nil {
			fields = append(fields,
				zap.Int32s("preferred_batch_size", db.GetPreferredBatchSize()),
				zap.Uint64("max_queue_delay_us", db.GetMaxQueueDelayMicroseconds()),
				zap.Uint32("max_queue_size", db.GetDefaultQueuePolicy().GetMaxQueueSize()))
		}
	}
	c.log.Info("Triton model", fields...)
	return problems, nil
}

func optionalInput(mc *inferencepb.ModelConfig, name string) bool {
	for _, in := range mc.GetInput() {
		if in.GetName() == name {
			return in.GetOptional()
		}
	}
	return false
}

func describeTensors(ts []*inferencepb.ModelMetadataResponse_TensorMetadata) string {
	if len(ts) == 0 {
		return "none"
	}
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = fmt.Sprintf("%q %s %s", t.GetName(), t.GetDatatype(), formatShape(t.GetShape()))
	}
	return strings.Join(parts, ", ")
}

// availableModels lists the repository's models for a "not found" message,
// best effort.
func (c *Client) availableModels(ctx context.Context) string {
	idx, err := c.rpc.RepositoryIndex(ctx, &inferencepb.RepositoryIndexRequest{})
	if err != nil || len(idx.GetModels()) == 0 {
		return ""
	}
	names := make([]string, 0, len(idx.GetModels()))
	for _, m := range idx.GetModels() {
		s := m.GetName()
		if m.GetState() != "" && m.GetState() != "READY" {
			s += " (" + m.GetState() + ")"
		}
		names = append(names, s)
	}
	slices.Sort(names)
	return " (server has: " + strings.Join(slices.Compact(names), ", ") + ")"
}

func modelRef(m ModelConfig) string {
	if m.Version == "" {
		return fmt.Sprintf("%q", m.Name)
	}
	return fmt.Sprintf("%q version %s", m.Name, m.Version)
}

// infer sends req for model m: bounded by request_timeout, resent after
// connection errors with jittered exponential backoff while the deadline
// allows, every attempt timed. Errors are *apierr.Error.
func (c *Client) infer(ctx context.Context, m ModelConfig, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout) // the sooner of the two wins
	defer cancel()
	rc := c.cfg.Retry
	wait := rc.InitialBackoff
	for attempt := 1; ; attempt++ {
		if c.cfg.DeadlineParam {
			setTimeoutParam(ctx, req)
		}
		start := time.Now()
		var replica peer.Peer
		resp, err := c.rpc.ModelInfer(ctx, req, grpc.Peer(&replica))
		if err == nil {
			c.metrics.inferTime.WithLabelValues(m.Label(), "ok").Observe(time.Since(start).Seconds())
			c.metrics.replicaBatch(m.Label(), &replica, "ok")
			return resp, nil
		}
		e, retryable := mapError(ctx, m.Name, err, rc.RetryAfter)
		c.metrics.inferTime.WithLabelValues(m.Label(), e.Kind.String()).Observe(time.Since(start).Seconds())
		c.metrics.replicaBatch(m.Label(), &replica, e.Kind.String())
		if !retryable || attempt >= rc.MaxAttempts {
			return nil, e
		}
		// Full jitter in [wait/2, wait): spreads the reconnect storm after a
		// Triton restart.
		sleep := wait/2 + rand.N(wait/2+1)
		if d, ok := ctx.Deadline(); ok && time.Until(d) <= sleep {
			return nil, e // no time left for another attempt: never retry past the deadline
		}
		c.log.Debug("retrying ModelInfer", zap.String("model", m.Name), zap.Int("attempt", attempt), zap.Duration("backoff", sleep), zap.Error(err))
		c.metrics.retries.WithLabelValues(m.Label()).Inc()
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, e
		case <-t.C:
		}
		wait = min(wait*2, rc.MaxBackoff)
	}
}

// setTimeoutParam sets Triton's "timeout" request parameter (int64
// microseconds) to the time left until ctx's deadline.
func setTimeoutParam(ctx context.Context, req *inferencepb.ModelInferRequest) {
	d, ok := ctx.Deadline()
	if !ok {
		return
	}
	us := time.Until(d).Microseconds()
	if us < 1 {
		us = 1 // 0 would mean "no timeout"
	}
	if req.Parameters == nil {
		req.Parameters = map[string]*inferencepb.InferParameter{}
	}
	req.Parameters["timeout"] = &inferencepb.InferParameter{
		ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: us},
	}
}
