package k8s

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Monitoring files: the sources, what is generated from them, and the metric
// name lists the expressions are checked against.
const (
	updateMonitoringEnv = "TUSOU_UPDATE_MONITORING"

	alertsSource       = "deploy/monitoring/tusou-alerts.yaml"
	dashboardPlain     = "deploy/monitoring/tusou-dashboard.json"
	dashboardComponent = "k8s/components/monitoring/tusou-dashboard.json"
	ruleComponent      = "k8s/components/monitoring/prometheusrule.yaml"
	// Written by app/metrics_integration_test.go from a running gateway's
	// /metrics and from the real Triton's :8002/metrics (TUSOU_UPDATE_METRICS=1).
	gatewayMetricsList = "deploy/monitoring/gateway-metrics.txt"
	tritonMetricsList  = "deploy/monitoring/triton-metrics.txt"
)

// promqlParser is the parser Prometheus itself uses (default options, as a
// Prometheus server without feature flags).
var promqlParser = parser.NewParser(parser.Options{})

// prometheusRuleYAML wraps the plain rule file into the Prometheus Operator's
// PrometheusRule. The rule file is decoded strictly into the operator's own
// spec type, so a field the operator does not know fails here, not at apply.
func prometheusRuleYAML(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), alertsSource))
	if err != nil {
		t.Fatal(err)
	}
	var spec monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(data, &spec); err != nil {
		t.Fatalf("%s does not decode into a PrometheusRule spec: %v", alertsSource, err)
	}
	out, err := yaml.Marshal(map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "PrometheusRule",
		"metadata":   map[string]any{"name": "tusou"},
		"spec":       spec,
	})
	if err != nil {
		t.Fatal(err)
	}
	header := "# GENERATED from deploy/monitoring/tusou-alerts.yaml by k8s/monitoring_test.go; do not edit.\n" +
		"# cd k8s && " + updateMonitoringEnv + "=1 go test -run TestMonitoringFilesInSync .\n"
	return append([]byte(header), out...)
}

// TestMonitoringFilesInSync: the generated dashboard and PrometheusRule
// equal what their sources produce. With TUSOU_UPDATE_MONITORING=1 it
// rewrites them instead.
func TestMonitoringFilesInSync(t *testing.T) {
	root := repoRoot(t)
	want := map[string][]byte{
		dashboardPlain:     dashboardJSON(),
		dashboardComponent: dashboardJSON(),
		ruleComponent:      prometheusRuleYAML(t),
	}
	for rel, data := range want {
		p := filepath.Join(root, rel)
		if os.Getenv(updateMonitoringEnv) != "" {
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%v (generate it: cd k8s && %s=1 go test -run TestMonitoringFilesInSync .)", err, updateMonitoringEnv)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s is out of date with its source; regenerate: cd k8s && %s=1 go test -run TestMonitoringFilesInSync .", rel, updateMonitoringEnv)
		}
	}
}

// promExpr is one PromQL expression and where it comes from.
type promExpr struct{ where, expr string }

// dashboardExprs are every panel query of the dashboard, with Grafana's
// interval variable replaced by a literal duration so Prometheus' parser
// sees what Prometheus will receive.
func dashboardExprs() []promExpr {
	var out []promExpr
	for _, r := range dashboardRows {
		for _, p := range r.panels {
			for _, tg := range p.targets {
				out = append(out, promExpr{
					where: "dashboard panel " + p.title,
					expr:  strings.ReplaceAll(tg.expr, "$__rate_interval", "5m"),
				})
			}
		}
	}
	return out
}

// alertRules parses the rule file with Prometheus' own rule loader (what
// `promtool check rules` runs: structure, durations, templates and PromQL).
func alertRules(t *testing.T) []rulefmt.Rule {
	t.Helper()
	rgs, errs := rulefmt.ParseFile(filepath.Join(repoRoot(t), alertsSource), false,
		model.UTF8Validation, promqlParser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	var rules []rulefmt.Rule
	for _, g := range rgs.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// TestMonitoringPromQLParses: every dashboard query and alert expression
// parses with Prometheus' parser, and the rule file loads as Prometheus
// would load it.
func TestMonitoringPromQLParses(t *testing.T) {
	exprs := dashboardExprs()
	for _, r := range alertRules(t) {
		exprs = append(exprs, promExpr{where: "alert " + r.Alert, expr: r.Expr})
	}
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions found", len(exprs))
	}
	for _, e := range exprs {
		if _, err := promqlParser.ParseExpr(e.expr); err != nil {
			t.Errorf("%s: %v\n%s", e.where, err, e.expr)
		}
	}
}

// metricList is one committed list of metric families: name -> type.
// Entries marked "documented" are checked against documentation only (see
// the list's header for why).
type metricList struct {
	types      map[string]string
	documented map[string]bool
}

func loadMetricList(t *testing.T, rel string) metricList {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatalf("%v (written by the integration test: TUSOU_UPDATE_METRICS=1 go test -tags integration -run TestMetricNames ./app/)", err)
	}
	defer f.Close()
	l := metricList{types: map[string]string{}, documented: map[string]bool{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			t.Fatalf("%s: bad line %q (want: name type [documented])", rel, line)
		}
		l.types[fields[0]] = fields[1]
		l.documented[fields[0]] = len(fields) > 2 && fields[2] == "documented"
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(l.types) == 0 {
		t.Fatalf("%s lists no metrics", rel)
	}
	return l
}

// family maps a series name to its metric family and type in the list:
// histogram series carry _bucket/_sum/_count suffixes.
func (l metricList) family(series string) (name, typ string, ok bool) {
	if typ, ok := l.types[series]; ok {
		return series, typ, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, found := strings.CutSuffix(series, suffix); found {
			if typ := l.types[base]; typ == "histogram" || (typ == "summary" && suffix != "_bucket") {
				return base, typ, true
			}
		}
	}
	return "", "", false
}

// TestMonitoringMetricNames: every metric a dashboard query or alert names
// is one the gateway or Triton really exports (lists scraped from the
// running stack), of a type the query can use: rate/increase only over
// counters (or histogram parts), histogram_quantile only over _bucket series,
// gauges never rated.
func TestMonitoringMetricNames(t *testing.T) {
	gw := loadMetricList(t, gatewayMetricsList)
	tr := loadMetricList(t, tritonMetricsList)
	exprs := dashboardExprs()
	for _, r := range alertRules(t) {
		exprs = append(exprs, promExpr{where: "alert " + r.Alert, expr: r.Expr})
	}
	used := map[string]bool{}
	for _, e := range exprs {
		ast, err := promqlParser.ParseExpr(e.expr)
		if err != nil {
			t.Errorf("%s: %v", e.where, err)
			continue
		}
		parser.Inspect(ast, func(n parser.Node, path []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := vs.Name
			if name == "" {
				t.Errorf("%s: selector %s has no metric name", e.where, vs)
				return nil
			}
			var list metricList
			switch {
			case strings.HasPrefix(name, "tusou_"):
				list = gw
			case strings.HasPrefix(name, "nv_"):
				list = tr
			default:
				t.Errorf("%s: %s is neither a tusou_ nor a Triton (nv_) metric", e.where, name)
				return nil
			}
			fam, typ, ok := list.family(name)
			if !ok {
				t.Errorf("%s: %s is not exported (not in %s or %s)", e.where, name, gatewayMetricsList, tritonMetricsList)
				return nil
			}
			used[fam] = true
			rated, quantile := enclosingCalls(path)
			counterLike := typ == "counter" || ((typ == "histogram" || typ == "summary") && name != fam)
			if rated && !counterLike {
				t.Errorf("%s: rate/increase over %s, a %s", e.where, name, typ)
			}
			if !rated && counterLike && typ == "counter" {
				t.Errorf("%s: counter %s used without rate/increase", e.where, name)
			}
			if quantile && !strings.HasSuffix(name, "_bucket") {
				t.Errorf("%s: histogram_quantile over %s, not a _bucket series", e.where, name)
			}
			return nil
		})
	}
	// The dashboard must cover what the issue asked for; a renamed metric
	// must not silently drop a panel.
	for _, m := range []string{
		"tusou_http_requests_total", "tusou_http_request_duration_seconds", "tusou_http_inflight_requests",
		"tusou_refusals_total", "tusou_triton_batch_size", "tusou_triton_queue_wait_seconds",
		"tusou_triton_queue_depth", "tusou_triton_inflight_batches", "tusou_triton_errors_total",
		"tusou_es_request_duration_seconds", "nv_inference_count", "nv_inference_exec_count",
		"nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us", "nv_gpu_utilization",
		// Model generations and switches (issue 9).
		"tusou_models_generation_role", "tusou_models_poll_errors_total", "tusou_models_view_age_seconds",
		"tusou_models_switch_running", "tusou_models_switch_progress_ratio",
		"tusou_models_switch_documents_total", "tusou_models_switches_total",
	} {
		if !used[m] {
			t.Errorf("no dashboard query or alert uses %s", m)
		}
	}
	var docOnly []string
	for m := range used {
		if tr.documented[m] {
			docOnly = append(docOnly, m)
		}
	}
	slices.Sort(docOnly)
	t.Logf("checked against Triton's documentation only (GPU metrics; the local Triton is CPU-only): %s", strings.Join(docOnly, ", "))
}

// enclosingCalls reports whether a selector sits inside rate/increase (via
// its range) and inside histogram_quantile.
func enclosingCalls(path []parser.Node) (rated, quantile bool) {
	for _, n := range path {
		if c, ok := n.(*parser.Call); ok {
			switch c.Func.Name {
			case "rate", "increase", "irate":
				rated = true
			case "histogram_quantile":
				quantile = true
			}
		}
	}
	return rated, quantile
}

// TestAlertsHaveRunbooks: each alert has a summary, a severity and a runbook
// annotation naming its entry, and docs/operations.md has that entry.
func TestAlertsHaveRunbooks(t *testing.T) {
	ops, err := os.ReadFile(filepath.Join(repoRoot(t), "docs/operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	rules := alertRules(t)
	want := []string{"TusouLoadShedding", "TusouBatcherSaturated", "TusouTritonErrors", "TusouReadinessFlapping", "TusouElasticsearchSlow",
		"TusouGenerationViewStale", "TusouModelSwitchFailed", "TusouModelSwitchStalled"}
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
			t.Errorf("%s: needs labels.severity and annotations.summary", r.Alert)
		}
		if r.Annotations["runbook"] != "docs/operations.md, Alerts and runbooks: "+r.Alert {
			t.Errorf("%s: runbook annotation %q does not name its entry", r.Alert, r.Annotations["runbook"])
		}
		if !regexp.MustCompile(`(?m)^- \*\*` + regexp.QuoteMeta(r.Alert) + `\*\*`).Match(ops) {
			t.Errorf("%s: no runbook line `- **%s**` in docs/operations.md", r.Alert, r.Alert)
		}
	}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("alert %s is missing from %s", w, alertsSource)
		}
	}
}

// TestStalenessLimitInMonitoring: the view age panel draws the production
// gateway's models.max_staleness (config.yaml, a TUSOU_ variable, else the
// documented default), and TusouGenerationViewStale fires below it, so it
// warns before or as writes are refused, never only after.
func TestStalenessLimitInMonitoring(t *testing.T) {
	objs := render(t, "overlays/prod")
	limit := gatewayConfig(t, objs).duration(t, "models.max_staleness")
	c := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-gateway").Spec.Template.Spec.Containers[0]
	for _, e := range c.Env {
		if e.Name == "TUSOU_MODELS_MAX_STALENESS" {
			d, err := time.ParseDuration(e.Value)
			if err != nil {
				t.Fatalf("%s=%q: %v", e.Name, e.Value, err)
			}
			limit = d
		}
	}
	if got := time.Duration(maxStalenessSeconds) * time.Second; got != limit {
		t.Errorf("dashboard draws max_staleness at %s, the prod gateway uses %s: update maxStalenessSeconds in dashboard_test.go", got, limit)
	}
	var threshold float64
	for _, r := range alertRules(t) {
		if r.Alert != "TusouGenerationViewStale" {
			continue
		}
		ast, err := promqlParser.ParseExpr(r.Expr)
		if err != nil {
			t.Fatal(err)
		}
		b, ok := ast.(*parser.BinaryExpr)
		if !ok || b.Op != parser.GTR {
			t.Fatalf("TusouGenerationViewStale: want `<view age> > <seconds>`, got %s", r.Expr)
		}
		n, ok := b.RHS.(*parser.NumberLiteral)
		if !ok {
			t.Fatalf("TusouGenerationViewStale: want `<view age> > <seconds>`, got %s", r.Expr)
		}
		threshold = n.Val
	}
	if threshold <= 0 || time.Duration(threshold*float64(time.Second)) >= limit {
		t.Errorf("TusouGenerationViewStale fires above %gs; want a threshold in (0, max_staleness=%s)", threshold, limit)
	}
}

// TestMonitoringComponentRendered: the production overlay carries the
// dashboard ConfigMap (labelled for Grafana's sidecar, stable name, valid
// dashboard JSON) and the PrometheusRule with the rule file's groups.
func TestMonitoringComponentRendered(t *testing.T) {
	objs := render(t, "overlays/prod")
	cm := findNamed[*corev1.ConfigMap](t, objs, "ConfigMap", "tusou-grafana-dashboard")
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v lack grafana_dashboard=1", cm.Labels)
	}
	var d struct {
		UID    string           `json:"uid"`
		Panels []map[string]any `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["tusou-dashboard.json"]), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.UID == "" || len(d.Panels) < 10 {
		t.Errorf("dashboard uid %q with %d panels", d.UID, len(d.Panels))
	}
	pr := findNamed[*monitoringv1.PrometheusRule](t, objs, "PrometheusRule", "tusou")
	if pr.Namespace != "tusou" {
		t.Errorf("PrometheusRule namespace %q", pr.Namespace)
	}
	n := 0
	for _, g := range pr.Spec.Groups {
		n += len(g.Rules)
	}
	if n != len(alertRules(t)) {
		t.Errorf("PrometheusRule has %d rules, the rule file %d", n, len(alertRules(t)))
	}
}
