package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// gateway is the `tusou serve` under test.
type gateway struct {
	cmd           *exec.Cmd
	exited        chan struct{}
	rest, sidecar string // base URLs
	esURL         string
	alias         string // the gateway's index alias
	sideIndex     string // the index written through the sidecar (not <alias>-*: that is the gateway's, read-only there)
	client        *http.Client
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func startGateway(ctx context.Context, o options, logPath, blobs string) (*gateway, error) {
	rest, err := freePort()
	if err != nil {
		return nil, err
	}
	side, err := freePort()
	if err != nil {
		return nil, err
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	alias := "tusou-soak-" + hex.EncodeToString(b[:])
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// Not CommandContext: the gateway is stopped by cleanup, with SIGTERM,
	// after the final checks, not when the load's context ends.
	cmd := exec.Command(o.bin, "serve",
		"--set", "server.listen="+rest, "--set", "sidecar.listen="+side, "--set", "sidecar.enabled=true",
		"--set", "elasticsearch.addresses="+o.esURL, "--set", "elasticsearch.index="+alias,
		"--set", "blobs.dir="+blobs, "--set", "text.tokenizer_path="+o.tokenizer, "--set", "log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (make build): %w", o.bin, err)
	}
	g := &gateway{cmd: cmd, exited: make(chan struct{}), rest: "http://" + rest, sidecar: "http://" + side,
		esURL: strings.TrimRight(o.esURL, "/"), alias: alias, sideIndex: "tusou-soak-sidecar-" + hex.EncodeToString(b[:]),
		client: &http.Client{Timeout: 60 * time.Second}}
	go func() { // owned by g: ends when the process does
		_ = cmd.Wait()
		logf.Close()
		close(g.exited)
	}()
	if err := g.waitReady(ctx, 3*time.Minute); err != nil {
		g.cleanup(func(string, ...any) {})
		tail, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("gateway did not become ready: %v\n%s", err, lastLines(string(tail), 20))
	}
	return g, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitReady polls /readyz (Elasticsearch and both Triton models).
func (g *gateway) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last string
	for {
		select {
		case <-g.exited:
			return errors.New("the gateway exited")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", g.rest+"/readyz", nil)
		res, err := g.client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
			last = fmt.Sprintf("%d %s", res.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %s)", ctx.Err(), last)
		case <-time.After(time.Second):
		}
	}
}

// es calls Elasticsearch directly (setup, verification, cleanup).
func (g *gateway) es(ctx context.Context, method, path, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, g.esURL+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := g.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// createSidecarIndex makes the index that sidecar clients write: image
// documents whose image_base64 the sidecar turns into image_embedding.
func (g *gateway) createSidecarIndex(ctx context.Context) error {
	code, b, err := g.es(ctx, "PUT", "/"+g.sideIndex, `{"settings":{"number_of_shards":1,"number_of_replicas":0},
		"mappings":{"properties":{"image_embedding":{"type":"dense_vector","dims":512,"index":true,"similarity":"cosine"},
		"tag":{"type":"keyword"},"n":{"type":"long"}}}}`)
	if err != nil || code != 200 {
		return fmt.Errorf("create %s: %d %s %v", g.sideIndex, code, b, err)
	}
	return nil
}

// cleanup stops the gateway and deletes the indices it and the soak made.
func (g *gateway) cleanup(logf func(string, ...any)) {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(60 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var names []string
	if code, b, err := g.es(ctx, "GET", "/_alias/"+g.alias, ""); err == nil && code == 200 {
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		for n := range m {
			names = append(names, n)
		}
	}
	names = append(names, g.sideIndex)
	for _, n := range names {
		if code, b, err := g.es(ctx, "DELETE", "/"+n, ""); err != nil || (code != 200 && code != 404) {
			logf("cleanup: delete index %s: %d %s %v", n, code, b, err)
		}
	}
}

// rssBytes reads the process's resident set from /proc.
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// sample is one RSS reading.
type sample struct {
	at        time.Duration // since the load started
	rss       int64
	inRestart bool
}

// sampleRSS reads the gateway's RSS every interval until ctx ends; the
// returned function waits for the sampler and hands over its samples.
func sampleRSS(ctx context.Context, g *gateway, every time.Duration, rec *recorder) func() []sample {
	var out []sample
	done := make(chan struct{})
	go func() { // owned: collect waits for it
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v, err := rssBytes(g.cmd.Process.Pid); err == nil {
				now := time.Now()
				out = append(out, sample{at: now.Sub(rec.start), rss: v, inRestart: rec.inWindow(now)})
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() []sample {
		<-done
		return out
	}
}

// stack restarts the shared local stack's services.
type stack struct {
	opts options
	logf func(string, ...any)
	once sync.Once
	wg   sync.WaitGroup
}

// restartSchedule restarts Triton and Elasticsearch, each opts.cycles times,
// alternating, spread evenly over the run (never in its first or last
// tenth). It returns at once; the restarts run in a goroutine that
// restoreStack waits for.
func (s *stack) restartSchedule(ctx context.Context, g *gateway, rec *recorder) {
	n := 2 * s.opts.cycles
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for i := range n {
			at := rec.start.Add(s.opts.duration * time.Duration(i+1) / time.Duration(n+1))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(at)):
			}
			svc := "triton"
			if i%2 == 1 {
				svc = "elasticsearch"
			}
			s.restart(ctx, svc, g, rec)
		}
	}()
}

// restart stops and starts one service with its deploy/local script and
// records the window from the stop until the gateway is ready again.
func (s *stack) restart(ctx context.Context, svc string, g *gateway, rec *recorder) {
	w := rec.openWindow(svc)
	script := "deploy/local/" + svc + ".sh"
	s.logf("restarting %s", svc)
	for _, verb := range []string{"down", "up"} {
		out, err := exec.Command("bash", script, verb).CombinedOutput()
		if err != nil {
			s.logf("%s %s: %v\n%s", script, verb, err, lastLines(string(out), 10))
			w.note = fmt.Sprintf("%s %s failed: %v", script, verb, err)
		}
	}
	if err := g.waitReady(ctx, 5*time.Minute); err != nil {
		s.logf("gateway not ready after restarting %s: %v", svc, err)
		w.note += " gateway not ready after: " + err.Error()
	}
	rec.closeWindow(w, s.opts.grace)
	s.logf("%s back after %s", svc, time.Since(w.start).Round(time.Second))
}

// restoreStack waits for a running restart, then brings the whole stack up
// (idempotent: a no-op when it is up).
func (s *stack) restoreStack() {
	s.wg.Wait()
	s.once.Do(func() {
		out, err := exec.Command("bash", "deploy/local/stack.sh", "up").CombinedOutput()
		if err != nil {
			s.logf("deploy/local/stack.sh up: %v\n%s", err, lastLines(string(out), 20))
		}
	})
}
