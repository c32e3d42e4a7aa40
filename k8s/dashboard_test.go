package k8s

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// The Grafana dashboard is defined here, as a table of panels, and written
// to deploy/monitoring/tusou-dashboard.json (for import by hand) and to
// k8s/components/monitoring/tusou-dashboard.json (the Grafana sidecar's
// ConfigMap) by TestMonitoringFilesInSync. Edit this table, never the JSON:
//
//	cd k8s && TUSOU_UPDATE_MONITORING=1 go test -run TestMonitoringFilesInSync .
//
// A table in code keeps the layout arithmetic (gridPos) out of reviewers'
// way and lets the tests parse every expression and check every metric name.

// panel is one time-series panel.
type panel struct {
	title, description string
	unit               string // Grafana unit id: reqps, s, µs, percentunit, short, ...
	targets            []target
	stack              bool // stacked areas (parts of a whole, e.g. refusals by reason)
}

// target is one PromQL query of a panel. Expressions may use Grafana's
// $__rate_interval; the tests substitute it before parsing.
type target struct {
	expr, legend string
}

// row groups panels under a collapsible heading.
type row struct {
	title  string
	panels []panel
}

// dashboardRows is the dashboard, top to bottom, two panels per line.
var dashboardRows = []row{
	{title: "Requests", panels: []panel{
		{
			title:       "Request rate by route",
			description: "HTTP requests per second by route and status code (probes and /metrics excluded).",
			unit:        "reqps",
			targets: []target{{
				expr:   `sum by (route, code) (rate(tusou_http_requests_total{route!~"/healthz|/readyz|/metrics"}[$__rate_interval]))`,
				legend: "{{route}} {{code}}",
			}},
		},
		{
			title:       "Latency by route (p50, p99)",
			description: "Request latency from the gateway's point of view, all status codes.",
			unit:        "s",
			targets: []target{
				{expr: `histogram_quantile(0.99, sum by (le, route) (rate(tusou_http_request_duration_seconds_bucket{route!~"/healthz|/readyz|/metrics"}[$__rate_interval])))`, legend: "p99 {{route}}"},
				{expr: `histogram_quantile(0.5, sum by (le, route) (rate(tusou_http_request_duration_seconds_bucket{route!~"/healthz|/readyz|/metrics"}[$__rate_interval])))`, legend: "p50 {{route}}"},
			},
		},
		{
			title:       "Load shedding (429/503) and server errors",
			description: "429: a gateway queue is full (decode pool or batcher); 503: Triton or Elasticsearch unavailable or overloaded. Both carry Retry-After.",
			unit:        "reqps",
			stack:       true,
			targets: []target{{
				expr:   `sum by (code) (rate(tusou_http_requests_total{code=~"429|5..",route!="/readyz"}[$__rate_interval]))`,
				legend: "{{code}}",
			}},
		},
		{
			title:       "Refusals by reason",
			description: "Client errors by error code (bad images, limits), decode-pool refusals, and items the micro-batcher did not send (queue_full, expired, closed, abandoned).",
			unit:        "reqps",
			stack:       true,
			targets: []target{
				{expr: `sum by (reason) (rate(tusou_refusals_total[$__rate_interval]))`, legend: "{{reason}}"},
				{expr: `sum(rate(tusou_preprocess_refusals_total[$__rate_interval]))`, legend: "decode pool full"},
				{expr: `sum by (model, reason) (rate(tusou_triton_refusals_total[$__rate_interval]))`, legend: "batcher {{model}} {{reason}}"},
			},
		},
		{
			title:       "In flight",
			description: "HTTP requests being handled and images waiting for a decode worker, summed over pods.",
			unit:        "short",
			targets: []target{
				{expr: `sum(tusou_http_inflight_requests)`, legend: "HTTP requests"},
				{expr: `sum(tusou_preprocess_waiting)`, legend: "images waiting for decode"},
			},
		},
		{
			title:       "Ingest acknowledgement latency (p50, p99)",
			description: "POST /v1/images until the 2xx: decode, embed, bulk and (refresh=wait_for) the coalesced refresh that makes the images searchable.",
			unit:        "s",
			targets: []target{
				{expr: `histogram_quantile(0.99, sum by (le) (rate(tusou_http_request_duration_seconds_bucket{route="/v1/images",method="POST",code=~"2.."}[$__rate_interval])))`, legend: "p99"},
				{expr: `histogram_quantile(0.5, sum by (le) (rate(tusou_http_request_duration_seconds_bucket{route="/v1/images",method="POST",code=~"2.."}[$__rate_interval])))`, legend: "p50"},
				{expr: `histogram_quantile(0.99, sum by (le) (rate(tusou_es_request_duration_seconds_bucket{op="bulk"}[$__rate_interval])))`, legend: "p99 Elasticsearch bulk"},
				{expr: `histogram_quantile(0.99, sum by (le) (rate(tusou_es_refresh_wait_seconds_bucket[$__rate_interval])))`, legend: "p99 wait for the coalesced refresh"},
			},
		},
	}},
	{title: "Batching and Triton", panels: []panel{
		{
			title:       "Batch fill: gateway vs Triton",
			description: "Average items per gateway batch (one ModelInfer call) and per Triton execution (after Triton's dynamic batcher merged requests). Both small on a busy GPU: raise the gateway max_delay (docs/operations.md §4, tusou tune).",
			unit:        "short",
			targets: []target{
				{expr: `sum by (model) (rate(tusou_triton_batch_size_sum[$__rate_interval])) / sum by (model) (rate(tusou_triton_batch_size_count[$__rate_interval]))`, legend: "gateway {{model}}"},
				{expr: `sum by (model) (rate(nv_inference_count[$__rate_interval])) / sum by (model) (rate(nv_inference_exec_count[$__rate_interval]))`, legend: "Triton {{model}}"},
			},
		},
		{
			title:       "Gateway batcher queue wait (p50, p99)",
			description: "Time an item waits in the gateway micro-batcher. About max_delay when healthy; growing means every in-flight slot is busy (Triton is the bottleneck).",
			unit:        "s",
			targets: []target{
				{expr: `histogram_quantile(0.99, sum by (le, model) (rate(tusou_triton_queue_wait_seconds_bucket[$__rate_interval])))`, legend: "p99 {{model}}"},
				{expr: `histogram_quantile(0.5, sum by (le, model) (rate(tusou_triton_queue_wait_seconds_bucket[$__rate_interval])))`, legend: "p50 {{model}}"},
			},
		},
		{
			title:       "Batcher queue depth and in-flight batches",
			description: "Items queued in the gateway batchers and batches sent to Triton and not yet answered, summed over pods. In-flight pinned at pods × max_inflight with a growing queue: scale Triton.",
			unit:        "short",
			targets: []target{
				{expr: `sum by (model) (tusou_triton_queue_depth)`, legend: "queued items {{model}}"},
				{expr: `sum by (model) (tusou_triton_inflight_batches)`, legend: "in-flight batches {{model}}"},
			},
		},
		{
			title:       "Triton queue and compute time per request",
			description: "Average time a request (one gateway batch) spends in Triton's queue and in compute, from Triton's own counters; and the gateway's whole RPC time (network + queue + compute).",
			unit:        "µs",
			targets: []target{
				{expr: `sum by (model) (rate(nv_inference_queue_duration_us[$__rate_interval])) / sum by (model) (rate(nv_inference_request_success[$__rate_interval]))`, legend: "Triton queue {{model}}"},
				{expr: `sum by (model) (rate(nv_inference_compute_infer_duration_us[$__rate_interval])) / sum by (model) (rate(nv_inference_request_success[$__rate_interval]))`, legend: "Triton compute {{model}}"},
				{expr: `1e6 * sum by (model) (rate(tusou_triton_infer_duration_seconds_sum{outcome="ok"}[$__rate_interval])) / sum by (model) (rate(tusou_triton_infer_duration_seconds_count{outcome="ok"}[$__rate_interval]))`, legend: "gateway RPC {{model}}"},
			},
		},
		{
			title:       "GPU utilisation",
			description: "Triton's GPU metrics (needs --allow-gpu-metrics; absent on CPU-only Triton).",
			unit:        "percentunit",
			targets: []target{
				{expr: `avg by (gpu_uuid) (nv_gpu_utilization)`, legend: "{{gpu_uuid}}"},
				{expr: `sum by (gpu_uuid) (nv_gpu_memory_used_bytes) / sum by (gpu_uuid) (nv_gpu_memory_total_bytes)`, legend: "memory {{gpu_uuid}}"},
			},
		},
		{
			title:       "Batches per Triton replica",
			description: "ModelInfer attempts per second by Triton replica (pod address) and outcome: the gateway round-robins over the headless Service's ready pods.",
			unit:        "ops",
			stack:       true,
			targets: []target{{
				expr:   `sum by (replica, outcome) (rate(tusou_triton_replica_requests_total[$__rate_interval]))`,
				legend: "{{replica}} {{outcome}}",
			}},
		},
		{
			title:       "Triton replicas ready",
			description: "Triton replicas (addresses the headless Service resolves to) ready in at least one gateway pod's load balancer, and all it knows; per replica not ready, how many gateway pods cannot send it batches (connecting or transient failure; /readyz lists the states).",
			unit:        "short",
			targets: []target{
				{expr: `sum(max by (replica) (tusou_triton_replica_up))`, legend: "ready"},
				{expr: `count(max by (replica) (tusou_triton_replica_up))`, legend: "known"},
				{expr: `sum by (replica) (1 - tusou_triton_replica_up) > 0`, legend: "not ready in N gateway pods: {{replica}}"},
			},
		},
		{
			title:       "Triton errors, failures and retries",
			description: "Failed batches after retries (gateway), ModelInfer resends after connection errors, and Triton's own failed requests by reason (REJECTED = queue full or queue timeout).",
			unit:        "ops",
			targets: []target{
				{expr: `sum by (model, kind) (rate(tusou_triton_errors_total[$__rate_interval]))`, legend: "gateway errors {{model}} {{kind}}"},
				{expr: `sum by (model) (rate(tusou_triton_retries_total[$__rate_interval]))`, legend: "gateway retries {{model}}"},
				{expr: `sum by (model, reason) (rate(nv_inference_request_failure[$__rate_interval]))`, legend: "Triton failures {{model}} {{reason}}"},
			},
		},
	}},
	{title: "Elasticsearch", panels: []panel{
		{
			title:       "Elasticsearch latency by operation (p50, p99)",
			description: "Calls from the gateway to Elasticsearch, retries included (knn, bulk, index, get, delete, ready).",
			unit:        "s",
			targets: []target{
				{expr: `histogram_quantile(0.99, sum by (le, op) (rate(tusou_es_request_duration_seconds_bucket[$__rate_interval])))`, legend: "p99 {{op}}"},
				{expr: `histogram_quantile(0.5, sum by (le, op) (rate(tusou_es_request_duration_seconds_bucket[$__rate_interval])))`, legend: "p50 {{op}}"},
			},
		},
		{
			title:       "Elasticsearch calls by outcome",
			description: "Calls per second by operation and outcome (ok or the error kind), and bulk items by result.",
			unit:        "ops",
			targets: []target{
				{expr: `sum by (op, outcome) (rate(tusou_es_requests_total[$__rate_interval]))`, legend: "{{op}} {{outcome}}"},
				{expr: `sum by (result) (rate(tusou_es_bulk_items_total[$__rate_interval]))`, legend: "bulk items {{result}}"},
			},
		},
		{
			title:       "Refresh coalescing (group commit)",
			description: "Writes made searchable per coalesced refresh (average), and refreshes per second. Many writers per refresh under load is the point: one refresh serves all concurrent ingests.",
			unit:        "short",
			targets: []target{
				{expr: `sum(rate(tusou_es_refresh_writers_sum[$__rate_interval])) / sum(rate(tusou_es_refresh_writers_count[$__rate_interval]))`, legend: "writers per refresh"},
				{expr: `sum(rate(tusou_es_refresh_writers_count[$__rate_interval]))`, legend: "refreshes/s"},
			},
		},
	}},
	{title: "Model generations", panels: []panel{
		{
			title:       "Generation by role (pods that see it)",
			description: "Gateway pods seeing each generation in each role (active, next = being filled by a switch, previous = kept for rollback). During a switch every pod should show the same next; after the cut-over, all pods move to the new active within a poll interval. Two lines for one role for longer than that: pods disagree (see view age).",
			unit:        "short",
			targets: []target{{
				expr:   `count by (role, generation) (tusou_models_generation_role{role!="unused"} == 1)`,
				legend: "{{role}}: {{generation}}",
			}},
		},
		{
			title:       "Switch progress",
			description: "Share of the active generation's documents the current backfill pass has compared (0..1), on the pod running the switch, and whether a pod runs one (100% = running). Flat progress while running: see TusouModelSwitchStalled.",
			unit:        "percentunit",
			targets: []target{
				{expr: `max by (instance) (tusou_models_switch_progress_ratio)`, legend: "progress {{instance}}"},
				{expr: `max by (instance) (tusou_models_switch_running)`, legend: "running {{instance}}"},
			},
		},
		{
			title:       "Switch documents by result",
			description: "Documents per second a switch handles: created (re-embedded into the new generation), skipped (a dual-write got there first), deleted (gone from the active generation meanwhile); failed and missing_original must stay 0 for the cut-over.",
			unit:        "ops",
			stack:       true,
			targets: []target{{
				expr:   `sum by (result) (rate(tusou_models_switch_documents_total[$__rate_interval]))`,
				legend: "{{result}}",
			}},
		},
		{
			title:       "Alias view age per pod",
			description: "Age of each gateway pod's reading of the generation aliases (re-read every models.poll_interval). Past models.max_staleness the pod refuses ingests and deletes with 503 generations_stale; TusouGenerationViewStale fires above 10 s.",
			unit:        "s",
			targets: []target{
				{expr: `max by (instance) (tusou_models_view_age_seconds)`, legend: "{{instance}}"},
				{expr: fmt.Sprintf(`vector(%d)`, maxStalenessSeconds), legend: "models.max_staleness: writes refused above"},
			},
		},
		{
			title:       "Switches finished and alias read errors",
			description: "Model switches finished per interval by outcome (done, failed, aborted), and failed readings of the generation aliases per pod (Elasticsearch unreachable: the view ages).",
			unit:        "short",
			targets: []target{
				{expr: `sum by (outcome) (increase(tusou_models_switches_total[$__rate_interval]))`, legend: "switches {{outcome}}"},
				{expr: `sum by (instance) (increase(tusou_models_poll_errors_total[$__rate_interval]))`, legend: "alias read errors {{instance}}"},
			},
		},
	}},
}

// maxStalenessSeconds is models.max_staleness of the production gateway
// (the default, 15s), drawn as the limit on the view age panel: Prometheus
// does not see the setting. TestDashboardStalenessLimit keeps it equal.
const maxStalenessSeconds = 15

// dashboardJSON renders dashboardRows as a Grafana dashboard (schema 39,
// Grafana 10/11). The data source is a template variable so the same JSON
// works when provisioned by the sidecar and when imported by hand.
func dashboardJSON() []byte {
	ds := map[string]any{"type": "prometheus", "uid": "${datasource}"}
	var panels []any
	id, y := 1, 0
	for _, r := range dashboardRows {
		panels = append(panels, map[string]any{
			"id": id, "type": "row", "title": r.title, "collapsed": false, "panels": []any{},
			"gridPos": map[string]int{"h": 1, "w": 24, "x": 0, "y": y},
		})
		id++
		y++
		for i, p := range r.panels {
			var targets []any
			for j, t := range p.targets {
				targets = append(targets, map[string]any{
					"refId": string(rune('A' + j)), "datasource": ds,
					"expr": t.expr, "legendFormat": t.legend, "range": true,
				})
			}
			custom := map[string]any{"fillOpacity": 10, "showPoints": "never", "lineWidth": 1}
			if p.stack {
				custom["stacking"] = map[string]any{"mode": "normal", "group": "A"}
				custom["fillOpacity"] = 40
			}
			panels = append(panels, map[string]any{
				"id": id, "type": "timeseries", "title": p.title, "description": p.description,
				"datasource": ds,
				"gridPos":    map[string]int{"h": 8, "w": 12, "x": 12 * (i % 2), "y": y + 8*(i/2)},
				"fieldConfig": map[string]any{
					"defaults":  map[string]any{"unit": p.unit, "custom": custom},
					"overrides": []any{},
				},
				"options": map[string]any{
					"legend":  map[string]any{"displayMode": "table", "placement": "bottom", "calcs": []string{"mean", "max", "lastNotNull"}, "showLegend": true},
					"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
				},
				"targets": targets,
			})
			id++
		}
		y += 8 * ((len(r.panels) + 1) / 2)
	}
	d := map[string]any{
		"uid":           "tusou-overview",
		"title":         "tusou",
		"description":   "tusou gateway, its two batchers, Triton, Elasticsearch and model generations. Generated by k8s/dashboard_test.go; runbooks in docs/operations.md.",
		"tags":          []string{"tusou"},
		"editable":      true,
		"schemaVersion": 39,
		"version":       1,
		"refresh":       "30s",
		"time":          map[string]string{"from": "now-6h", "to": "now"},
		"timezone":      "browser",
		"templating": map[string]any{"list": []any{map[string]any{
			"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
			"current": map[string]any{}, "hide": 0, "refresh": 1,
		}}},
		"annotations": map[string]any{"list": []any{}},
		"panels":      panels,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		panic(err)
	}
	return buf.Bytes()
}
