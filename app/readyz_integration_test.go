//go:build integration

package app

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/tusou/tusou/config"
)

// TestReadyzShowsTritonReplicas: on the real stack, /readyz lists the one
// local Triton as a ready replica next to the unchanged checks, and /metrics
// exports it as up.
func TestReadyzShowsTritonReplicas(t *testing.T) {
	s := startGateway(t, nil)
	addr := config.Default().Triton.GRPCAddr
	resp, err := http.Get(s.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status   string                       `json:"status"`
		Checks   map[string]string            `json:"checks"`
		Replicas map[string]map[string]string `json:"replicas"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %d %v", resp.StatusCode, err)
	}
	t.Logf("readyz: %+v", body)
	if want := map[string]string{"elasticsearch": "ok", "triton": "ok", "models": "ok"}; !maps.Equal(body.Checks, want) {
		t.Errorf("checks %v, want %v", body.Checks, want)
	}
	if want := map[string]string{addr: "ready"}; !maps.Equal(body.Replicas["triton"], want) {
		t.Errorf("replicas %v, want triton: %v", body.Replicas, want)
	}

	mresp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer mresp.Body.Close()
	metrics, err := io.ReadAll(mresp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := `tusou_triton_replica_up{replica="` + addr + `"} 1`; !strings.Contains(string(metrics), want+"\n") {
		t.Errorf("/metrics lacks %s", want)
	}
}
