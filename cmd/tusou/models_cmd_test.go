package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusou/tusou/client"
	"github.com/tusou/tusou/client/clienttest"
)

// fastPolls makes switches poll without waiting.
func fastPolls(t *testing.T) {
	every, idle := modelsPollEvery, modelsIdlePolls
	modelsPollEvery = time.Millisecond
	t.Cleanup(func() { modelsPollEvery, modelsIdlePolls = every, idle })
}

func modelsGateway(t *testing.T) *clienttest.Gateway {
	t.Helper()
	fastPolls(t)
	g := clienttest.New()
	t.Cleanup(g.Close)
	g.AdminKeys = []string{"adm1n"}
	g.Models = &clienttest.Models{Active: "a", Documents: 300, Generations: []clienttest.Generation{
		{Name: "a", ImageModel: "clip_image", ImageVersion: "1", TextModel: "clip_text", TextVersion: "1"},
		{Name: "b", ImageModel: "clip_image", ImageVersion: "2", TextModel: "clip_text", TextVersion: "2"},
		{Name: "c", ImageModel: "clip_image", ImageVersion: "3", TextModel: "clip_text", TextVersion: "3"},
	}}
	t.Setenv("TUSOU_ADMIN_KEY", "adm1n")
	t.Setenv("TUSOU_URL", g.URL)
	return g
}

func TestModelsSwitchFollowsToDone(t *testing.T) {
	g := modelsGateway(t)
	var stdout, stderr bytes.Buffer
	if err := run([]string{"models", "switch", "--to", "b"}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	for _, want := range []string{"creating b\n", "backfilling b: 150/300 (85 docs/s)\n", "reconciling b: 300/300", "\ncutting_over b\n"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, stderr.String())
		}
	}
	out := stdout.String()
	for _, want := range []string{"alias images\n", "GENERATION  ROLE", "images-b-000001  300        clip_image@2  clip_text@2",
		"a           previous", "c           unused    -", "switch a -> b: done in", "300/300 scanned, 300 created"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if m := g.ModelsState(); m.Active != "b" || m.Previous != "a" || m.Next != "" {
		t.Fatalf("fake state %+v", m)
	}
	// Rollback, JSON out: the final Status JSON as the gateway sent it.
	stdout.Reset()
	if err := run([]string{"models", "rollback", "-o", "json"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	var s client.ModelsStatus
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil || s.Active != "a" || s.Previous != "b" || s.Switch.State != "done" ||
		s.Switch.To != "a" || len(s.Generations) != 3 {
		t.Fatalf("json %s (%v)", stdout.String(), err)
	}
	var raw map[string]any
	if json.Unmarshal(stdout.Bytes(), &raw); raw["next"] != nil || raw["generations"] == nil {
		t.Fatalf("json must keep the gateway's nulls: %s", stdout.String())
	}
	// Again: nothing to do, exit 0.
	stdout.Reset()
	if err := run([]string{"models", "switch", "--to", "a"}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "nothing to do, a is already active") {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	// Prune: refused without --yes, done with it.
	err := run([]string{"models", "prune"}, &stdout, &stderr)
	if exitStatus(err) != exitUsage || !strings.Contains(err.Error(), "previous generation's index") || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("prune without --yes: %v", err)
	}
	if n := g.Requests()["POST /v1/admin/models/prune"]; n != 0 {
		t.Fatalf("prune without --yes reached the gateway %d times", n)
	}
	stdout.Reset()
	if err := run([]string{"models", "prune", "--yes"}, &stdout, &stderr); err != nil || stdout.String() != "deleted index images-b-000001 of generation b\n" {
		t.Fatalf("%v %q", err, stdout.String())
	}
	err = run([]string{"models", "prune", "--generation", "a", "--yes"}, &stdout, &stderr)
	if exitStatus(err) != exitFailed || !strings.Contains(err.Error(), "generation_in_use") {
		t.Fatalf("prune the active generation: %v", err)
	}
}

func TestModelsSwitchFailed(t *testing.T) {
	g := modelsGateway(t)
	g.Models.FailAt, g.Models.FailError = "verifying", "probe query answered no hits on b"
	var stdout, stderr bytes.Buffer
	err := run([]string{"models", "switch", "--to", "b", "-o", "json"}, &stdout, &stderr)
	if exitStatus(err) != exitFailed || !strings.Contains(err.Error(), "the switch to b failed: probe query answered no hits on b") {
		t.Fatalf("err %v", err)
	}
	var s client.ModelsStatus
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil || s.Switch.State != "failed" || s.Active != "a" {
		t.Fatalf("final status %s (%v)", stdout.String(), err)
	}
}

func TestModelsRefusals(t *testing.T) {
	g := modelsGateway(t)
	var stdout, stderr bytes.Buffer
	if err := run([]string{"models", "switch", "--to", "b", "--detach"}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "switch a -> b: creating") {
		t.Fatalf("detach: %v\n%s", err, stdout.String())
	}
	err := run([]string{"models", "switch", "--to", "c"}, &stdout, &stderr)
	if exitStatus(err) != exitFailed || !strings.Contains(err.Error(), "switch_in_progress") || !strings.Contains(err.Error(), "tusou models abort") {
		t.Fatalf("second switch: %v", err)
	}
	err = run([]string{"models", "switch", "--to", "zz"}, &stdout, &stderr)
	if exitStatus(err) != exitFailed || !strings.Contains(err.Error(), "unknown_generation") {
		t.Fatalf("unknown generation: %v", err)
	}
	stdout.Reset()
	if err := run([]string{"models", "abort"}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "switch a -> b: aborted") {
		t.Fatalf("abort: %v\n%s", err, stdout.String())
	}
	err = run([]string{"models", "rollback"}, &stdout, &stderr)
	if exitStatus(err) != exitFailed || !strings.Contains(err.Error(), "no_previous") {
		t.Fatalf("rollback without a previous generation: %v", err)
	}

	// Keys: the API key's variable is not an admin key.
	t.Setenv("TUSOU_ADMIN_KEY", "")
	t.Setenv("TUSOU_API_KEY", "adm1n")
	err = run([]string{"models", "status"}, &stdout, &stderr)
	if exitStatus(err) != exitFailed || !strings.Contains(err.Error(), "no admin key given: set env TUSOU_ADMIN_KEY") {
		t.Fatalf("no admin key: %v", err)
	}
	err = run([]string{"models", "status", "--api-key", "wrong"}, &stdout, &stderr)
	if exitStatus(err) != exitFailed || !strings.Contains(err.Error(), "refused the admin key") || !strings.Contains(err.Error(), "auth.admin_keys") {
		t.Fatalf("wrong admin key: %v", err)
	}
	g.AdminKeys = nil
	err = run([]string{"models", "status", "--api-key", "adm1n"}, &stdout, &stderr)
	if exitStatus(err) != exitFailed || !strings.Contains(err.Error(), "admin API of the gateway at "+g.URL+" is disabled: configure auth.admin_keys") {
		t.Fatalf("admin API disabled: %v", err)
	}
}

func TestModelsUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"models"},
		{"models", "frob"},
		{"models", "switch"},
		{"models", "status", "-o", "yaml"},
		{"models", "status", "extra"},
		{"models", "rollback", "--to", "a"},
		{"models", "prune", "--generation", "a"},
		{"models", "status", "--url", "localhost:8080"},
	} {
		var out bytes.Buffer
		if err := run(args, &out, &out); exitStatus(err) != exitUsage {
			t.Errorf("%v: err %v, want exit %d", args, err, exitUsage)
		}
	}
}

// scriptedAdmin answers the switch POST with post and the status GETs with
// gets in turn (the last one repeated): a load-balanced set of gateways,
// only one of which runs the switch. onGet runs before each GET is answered.
func scriptedAdmin(t *testing.T, post string, onGet func(n int), gets ...string) string {
	t.Helper()
	fastPolls(t)
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte(post))
			return
		}
		mu.Lock()
		body := gets[min(n, len(gets)-1)]
		n++
		if onGet != nil {
			onGet(n)
		}
		mu.Unlock()
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	t.Setenv("TUSOU_ADMIN_KEY", "k")
	return srv.URL
}

// Status bodies of a gateway pair: the one running the switch, the other.
const (
	started     = `"started_at":"2026-12-06T04:00:00Z"`
	postRunning = `{"alias":"images","active":"a","next":null,"generations":[],"switch":{"from":"a","to":"b","state":"creating","running":true,` + started + `}}`
	running     = `{"alias":"images","active":"a","next":"b","generations":[],"switch":{"from":"a","to":"b","state":"backfilling","running":true,"total":10,"scanned":4,` + started + `}}`
	otherNext   = `{"alias":"images","active":"a","next":"b","generations":[],"switch":{"to":"b","state":"interrupted","running":false}}`
	otherBefore = `{"alias":"images","active":"a","next":null,"generations":[],"switch":null}`
	otherCutB   = `{"alias":"images","active":"b","previous":"a","next":null,"generations":[],"switch":null}`
	// A switch to b that this gateway ran and finished earlier.
	staleDone = `{"alias":"images","active":"a","next":"b","generations":[],"switch":{"from":"a","to":"b","state":"done","running":false,"started_at":"2026-12-05T04:00:00Z"}}`
)

func TestModelsSwitchBehindALoadBalancer(t *testing.T) {
	for _, tc := range []struct {
		name string
		gets []string
		idle int
		want string // "" for success
	}{
		// The other replica has not seen -next yet, another's old switch is
		// not this one, and the cut-over is seen from the other replica.
		{"cut over seen elsewhere", []string{otherBefore, staleDone, running, otherNext, running, otherCutB}, 120, ""},
		{"next removed before the cut-over", []string{otherBefore, running, otherNext, otherBefore}, 120, "images-next was removed before the cut-over"},
		{"nobody runs it", []string{otherNext}, 5, "no gateway reported the switch to b running for 5 polls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := scriptedAdmin(t, postRunning, nil, tc.gets...)
			modelsIdlePolls = tc.idle
			var stdout, stderr bytes.Buffer
			err := run([]string{"models", "switch", "--to", "b", "--url", url}, &stdout, &stderr)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("%v\n%s", err, stderr.String())
				}
				if !strings.Contains(stdout.String(), "alias images") || !strings.Contains(stderr.String(), "backfilling b: 4/10") {
					t.Fatalf("stdout %s\nstderr %s", stdout.String(), stderr.String())
				}
				return
			}
			if exitStatus(err) != exitFailed || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want exit 1 with %q", err, tc.want)
			}
		})
	}
}

func TestModelsInterruptedWhileFollowing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url := scriptedAdmin(t, postRunning, func(n int) {
		if n == 3 {
			cancel() // Ctrl-C
		}
	}, running)
	var stdout, stderr bytes.Buffer
	err := modelsCmd(ctx, []string{"switch", "--to", "b", "--url", url}, &stdout, &stderr)
	if exitStatus(err) != exitInterrupted {
		t.Fatalf("err %v, want exit %d", err, exitInterrupted)
	}
	if msg := stderr.String(); !strings.Contains(msg, "the switch to b goes on in the gateway: `tusou models status` follows it, `tusou models abort` stops it") {
		t.Fatalf("stderr %s", msg)
	}
}

func TestModelsGatewayStopsAnsweringWhileFollowing(t *testing.T) {
	url := scriptedAdmin(t, postRunning, nil, running, "<html>proxy error</html>")
	var stdout, stderr bytes.Buffer
	err := run([]string{"models", "switch", "--to", "b", "--url", url}, &stdout, &stderr)
	if exitStatus(err) != exitFailed || !strings.Contains(err.Error(), "following the switch to b: GET /v1/admin/models: answer is not the expected JSON") ||
		!strings.Contains(err.Error(), "the switch may go on in the gateway") {
		t.Fatalf("err %v", err)
	}
	if stdout.Len() != 0 {
		t.Fatalf("no final status to print, got:\n%s", stdout.String())
	}
}
