//go:build integration

package app

import (
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tusou/tusou/internal/testutil"
)

// The committed metric lists the dashboard and alert rules are checked
// against (k8s/monitoring_test.go). This test proves them true on the real
// stack; TUSOU_UPDATE_METRICS=1 rewrites them from what it scrapes.
const (
	gatewayMetricsList = "deploy/monitoring/gateway-metrics.txt"
	tritonMetricsList  = "deploy/monitoring/triton-metrics.txt"
	tritonMetricsURL   = "http://127.0.0.1:8002/metrics"
)

// tritonGPUMetrics are Triton's GPU metrics as its documentation names them
// (docs/user_guide/metrics.md, "GPU Metrics"). The local Triton is CPU-only
// and does not export them, so they are listed as "documented".
var tritonGPUMetrics = map[string]string{
	"nv_gpu_utilization":        "gauge",
	"nv_gpu_memory_total_bytes": "gauge",
	"nv_gpu_memory_used_bytes":  "gauge",
	"nv_gpu_power_usage":        "gauge",
}

// scrape fetches a Prometheus text endpoint and returns family -> type.
func scrape(t *testing.T, url string) map[string]string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape %s: status %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	out := map[string]string{}
	for name, mf := range mfs {
		out[name] = strings.ToLower(dto.MetricType_name[int32(mf.GetType())])
	}
	return out
}

// readMetricList reads a committed list (name type [documented]).
func readMetricList(t *testing.T, rel string) (types map[string]string, documented map[string]bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testutil.Root(), rel))
	if err != nil {
		t.Fatalf("%v (write it: TUSOU_UPDATE_METRICS=1 go test -tags integration -run TestMetricNames ./app/)", err)
	}
	types, documented = map[string]string{}, map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		types[f[0]] = f[1]
		documented[f[0]] = len(f) > 2 && f[2] == "documented"
	}
	return types, documented
}

func writeMetricList(t *testing.T, rel, header string, live map[string]string, documented map[string]string) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(header)
	for _, name := range slices.Sorted(maps.Keys(live)) {
		fmt.Fprintf(&b, "%s %s\n", name, live[name])
	}
	for _, name := range slices.Sorted(maps.Keys(documented)) {
		if _, ok := live[name]; !ok {
			fmt.Fprintf(&b, "%s %s documented\n", name, documented[name])
		}
	}
	if err := os.WriteFile(filepath.Join(testutil.Root(), rel), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkList fails for every listed (not documentation-only) family that the
// live endpoint does not export with the same type.
func checkList(t *testing.T, rel string, live map[string]string) {
	t.Helper()
	want, documented := readMetricList(t, rel)
	if len(want) == 0 {
		t.Fatalf("%s lists nothing", rel)
	}
	for name, typ := range want {
		got, ok := live[name]
		switch {
		case documented[name] && !ok:
			// expected on a CPU-only Triton
		case !ok:
			t.Errorf("%s lists %s, but it is not exported (regenerate with TUSOU_UPDATE_METRICS=1 if it was removed on purpose)", rel, name)
		case got != typ:
			t.Errorf("%s lists %s as %s, it is exported as %s", rel, name, typ, got)
		}
	}
	var extra []string
	for name := range live {
		if _, ok := want[name]; !ok {
			extra = append(extra, name)
		}
	}
	slices.Sort(extra)
	if len(extra) > 0 {
		t.Logf("exported but not in %s (not usable by dashboards until listed): %s", rel, strings.Join(extra, ", "))
	}
}

// TestMetricNames: after real traffic (ingest, both searches, a refused
// request, probes), the gateway's /metrics exports every tusou_* family in
// deploy/monitoring/gateway-metrics.txt, and the real Triton's /metrics every
// nv_* family in deploy/monitoring/triton-metrics.txt. The dashboards and
// alert rules use only names from those lists (k8s/monitoring_test.go).
func TestMetricNames(t *testing.T) {
	s := startGateway(t, nil)
	images := filepath.Join(testutil.Root(), "model_repository/testdata/images")
	photo := readFile(t, filepath.Join(images, "chelsea.png"))
	// One image (Elasticsearch index) and two in one request (bulk).
	if code, body := postFiles(t, s.url+"/v1/images", map[string][]byte{"cat.png": photo}, nil); code != 201 {
		t.Fatalf("ingest: %d %s", code, body)
	}
	two := map[string][]byte{"coffee.jpg": readFile(t, filepath.Join(images, "coffee_420.jpg")),
		"rocket.jpg": readFile(t, filepath.Join(images, "rocket_444.jpg"))}
	if code, body := postFiles(t, s.url+"/v1/images", two, nil); code != 201 {
		t.Fatalf("bulk ingest: %d %s", code, body)
	}
	if code, body := postRaw(t, s.url+"/v1/search/image?k=1", "image/png", photo); code != 200 {
		t.Fatalf("image search: %d %s", code, body)
	}
	if code, body := postRaw(t, s.url+"/v1/search/text", "application/json", []byte(`{"text":"一只猫","k":1}`)); code != 200 {
		t.Fatalf("text search: %d %s", code, body)
	}
	if code, body := postRaw(t, s.url+"/v1/search/text", "application/json", []byte(`{"text":"cat","k":0}`)); code != 400 {
		t.Fatalf("k=0 should be refused with 400: %d %s", code, body)
	}
	if resp, err := http.Get(s.url + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	gw := map[string]string{}
	for name, typ := range scrape(t, s.url+"/metrics") {
		if strings.HasPrefix(name, "tusou_") {
			gw[name] = typ
		}
	}
	tr := map[string]string{}
	for name, typ := range scrape(t, tritonMetricsURL) {
		if strings.HasPrefix(name, "nv_") {
			tr[name] = typ
		}
	}
	if os.Getenv("TUSOU_UPDATE_METRICS") != "" {
		writeMetricList(t, gatewayMetricsList,
			"# tusou_* metric families a running gateway exports after traffic (name type).\n"+
				"# Written by app/metrics_integration_test.go (TUSOU_UPDATE_METRICS=1) from /metrics;\n"+
				"# the dashboards and alert rules may only use these (k8s/monitoring_test.go).\n", gw, nil)
		writeMetricList(t, tritonMetricsList,
			"# nv_* metric families of a real Triton (name type [documented]).\n"+
				"# Written by app/metrics_integration_test.go (TUSOU_UPDATE_METRICS=1) from the local\n"+
				"# Triton's :8002/metrics. \"documented\": GPU metrics the CPU-only local Triton does\n"+
				"# not export, taken from Triton's metrics documentation.\n", tr, tritonGPUMetrics)
	}
	checkList(t, gatewayMetricsList, gw)
	checkList(t, tritonMetricsList, tr)
	t.Logf("gateway exports %d tusou_* families, Triton %d nv_* families", len(gw), len(tr))
}
