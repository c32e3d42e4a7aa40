package tune

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tusou/tusou/triton/inferencepb"
)

// TritonSnapshot is Triton's cumulative counters for one model (summed over
// versions) and its GPU utilisation gauge at one instant.
type TritonSnapshot struct {
	Requests   float64 // nv_inference_request_success: requests (gateway batches) answered
	Failures   float64 // nv_inference_request_failure, all reasons
	Inferences float64 // nv_inference_count: items (images) inferred
	Executions float64 // nv_inference_exec_count: model executions (Triton batches)
	QueueUS    float64 // nv_inference_queue_duration_us
	ComputeUS  float64 // nv_inference_compute_infer_duration_us
	GPUUtil    float64 // mean nv_gpu_utilization over GPUs (0..1); NaN without GPU metrics
}

// TritonDelta is what happened between two snapshots.
type TritonDelta struct {
	Requests, Failures, Inferences, Executions float64
	// Batch is items per execution: the batch size Triton really ran.
	Batch float64
	// QueuePerRequest and ComputePerExec are average durations.
	QueuePerRequest, ComputePerExec time.Duration
	// GPUUtil is the utilisation at the end of the step (NaN without GPU).
	GPUUtil float64
	Valid   bool // false when no metrics were read
}

// Sub returns s - before.
func (s TritonSnapshot) Sub(before TritonSnapshot) TritonDelta {
	d := TritonDelta{
		Requests:   s.Requests - before.Requests,
		Failures:   s.Failures - before.Failures,
		Inferences: s.Inferences - before.Inferences,
		Executions: s.Executions - before.Executions,
		GPUUtil:    s.GPUUtil,
		Batch:      math.NaN(),
		Valid:      true,
	}
	if d.Executions > 0 {
		d.Batch = d.Inferences / d.Executions
		d.ComputePerExec = time.Duration((s.ComputeUS - before.ComputeUS) / d.Executions * float64(time.Microsecond))
	}
	if d.Requests > 0 {
		d.QueuePerRequest = time.Duration((s.QueueUS - before.QueueUS) / d.Requests * float64(time.Microsecond))
	}
	return d
}

// HTTPMetrics reads Triton's Prometheus endpoint (:8002/metrics).
type HTTPMetrics struct {
	URL    string
	Model  string
	Client *http.Client
}

// Snapshot scrapes the endpoint once.
func (m *HTTPMetrics) Snapshot(ctx context.Context) (TritonSnapshot, error) {
	hc := m.Client
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.URL, nil)
	if err != nil {
		return TritonSnapshot{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return TritonSnapshot{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return TritonSnapshot{}, fmt.Errorf("%s: status %d", m.URL, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return TritonSnapshot{}, fmt.Errorf("%s: %w", m.URL, err)
	}
	return snapshotFrom(mfs, m.Model)
}

// snapshotFrom extracts the model's counters from parsed families.
func snapshotFrom(mfs map[string]*dto.MetricFamily, modelName string) (TritonSnapshot, error) {
	sum := func(name string) (float64, bool) {
		mf, ok := mfs[name]
		if !ok {
			return 0, false
		}
		var v float64
		found := false
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" && l.GetValue() == modelName {
					v += value(m)
					found = true
				}
			}
		}
		return v, found
	}
	var s TritonSnapshot
	var ok bool
	if s.Requests, ok = sum("nv_inference_request_success"); !ok {
		return s, fmt.Errorf("no nv_inference_request_success for model %q (is it loaded, and are metrics enabled?)", modelName)
	}
	s.Failures, _ = sum("nv_inference_request_failure")
	s.Inferences, _ = sum("nv_inference_count")
	s.Executions, _ = sum("nv_inference_exec_count")
	s.QueueUS, _ = sum("nv_inference_queue_duration_us")
	s.ComputeUS, _ = sum("nv_inference_compute_infer_duration_us")
	s.GPUUtil = math.NaN()
	if mf, ok := mfs["nv_gpu_utilization"]; ok && len(mf.GetMetric()) > 0 {
		var u float64
		for _, m := range mf.GetMetric() {
			u += value(m)
		}
		s.GPUUtil = u / float64(len(mf.GetMetric()))
	}
	return s, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// ModelLimits are the facts of Triton's model configuration that bound the
// gateway's settings.
type ModelLimits struct {
	MaxBatchSize   int   // Triton's max_batch_size
	PreferredBatch []int // dynamic_batching.preferred_batch_size
	MaxQueueDelay  time.Duration
	MaxQueueSize   int // dynamic_batching.default_queue_policy.max_queue_size (0: unbounded)
	Instances      int // instance_group counts summed (per device for GPU groups)
	Dynamic        bool
}

// ReadModelLimits asks Triton for the model's configuration.
func ReadModelLimits(ctx context.Context, rpc inferencepb.GRPCInferenceServiceClient, name, version string) (ModelLimits, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := rpc.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: name, Version: version})
	if err != nil {
		return ModelLimits{}, fmt.Errorf("triton ModelConfig %s: %w", name, err)
	}
	c := resp.GetConfig()
	l := ModelLimits{MaxBatchSize: int(c.GetMaxBatchSize())}
	for _, g := range c.GetInstanceGroup() {
		n := int(g.GetCount())
		if len(g.GetGpus()) > 0 {
			n *= len(g.GetGpus())
		}
		l.Instances += n
	}
	if l.Instances == 0 {
		l.Instances = 1 // Triton's default: one instance (per GPU)
	}
	if db := c.GetDynamicBatching(); db != nil {
		l.Dynamic = true
		for _, p := range db.GetPreferredBatchSize() {
			l.PreferredBatch = append(l.PreferredBatch, int(p))
		}
		l.MaxQueueDelay = time.Duration(db.GetMaxQueueDelayMicroseconds()) * time.Microsecond
		l.MaxQueueSize = int(db.GetDefaultQueuePolicy().GetMaxQueueSize())
	}
	return l, nil
}
