// Command soak runs mixed load against a real `tusou serve` on the local
// stack for a long time, optionally restarting Triton and Elasticsearch
// under it, and prints a Markdown report: errors other than backpressure
// (429/503) outside the restart windows, acknowledged writes lost, and the
// gateway's RSS over time. It is `make soak`; not part of `make test`.
//
//	go run ./bench/soak -duration 30m                 # the real thing (restarts the SHARED stack)
//	go run ./bench/soak -duration 2m -restarts=false  # a short run that leaves the stack alone
//
// The gateway is bin/tusou, started on free ports with its own index alias,
// sidecar index and blob folder, all removed at the end. With restarts, the
// stack is brought back up (deploy/local/stack.sh up) however the run ends.
// Exit status: 0 pass, 1 a criterion failed, 2 the run could not be made.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

type options struct {
	bin        string
	esURL      string
	duration   time.Duration
	restarts   bool
	cycles     int
	warmup     time.Duration
	sample     time.Duration
	ingesters  int
	searchers  int
	sidecars   int
	think      time.Duration
	grace      time.Duration
	tokenizer  string
	reportPath string
	keepLogs   bool
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/tusou", "the gateway binary (make build)")
	flag.StringVar(&o.esURL, "es", envOr("TUSOU_ES_URL", "http://127.0.0.1:9200"), "Elasticsearch, for setup, checks and cleanup")
	flag.DurationVar(&o.duration, "duration", 30*time.Minute, "how long the load runs")
	flag.BoolVar(&o.restarts, "restarts", true, "restart Triton and Elasticsearch during the run (the SHARED local stack: other users' tests fail meanwhile)")
	flag.IntVar(&o.cycles, "restart-cycles", 2, "how many times each of Triton and Elasticsearch is restarted")
	flag.DurationVar(&o.warmup, "warmup", 0, "RSS before this is warm-up, not judged (0: a fifth of -duration, at most 5m)")
	flag.DurationVar(&o.sample, "sample", 5*time.Second, "RSS sampling interval")
	flag.IntVar(&o.ingesters, "ingesters", 2, "concurrent REST ingest clients")
	flag.IntVar(&o.searchers, "searchers", 1, "concurrent REST search/get clients")
	flag.IntVar(&o.sidecars, "sidecars", 1, "concurrent Elasticsearch-API clients on the sidecar listener")
	flag.DurationVar(&o.think, "think", 50*time.Millisecond, "pause between one client's requests")
	flag.DurationVar(&o.grace, "grace", 15*time.Second, "errors this long after a restarted service is ready again still count as the restart's")
	flag.StringVar(&o.tokenizer, "tokenizer", "", "text.tokenizer_path (empty: the one `make run` uses)")
	flag.StringVar(&o.reportPath, "report", "", "also write the Markdown report to this file")
	flag.BoolVar(&o.keepLogs, "keep-logs", false, "keep the gateway's log and blob folder (printed at the end)")
	flag.Parse()
	if o.warmup == 0 {
		o.warmup = min(o.duration/5, 5*time.Minute)
	}
	if o.tokenizer == "" {
		o.tokenizer = "model_repository/tiny/clip_text/tokenizer.json"
		if _, err := os.Stat("model_repository/clip_text/tokenizer.json"); err == nil {
			o.tokenizer = "model_repository/clip_text/tokenizer.json"
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, o))
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, o options) int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "soak: "+format+"\n", args...)
	}
	dir, err := os.MkdirTemp("", "tusou-soak-")
	if err != nil {
		logf("%v", err)
		return 2
	}
	if o.keepLogs {
		defer logf("kept %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	st := &stack{opts: o, logf: logf}
	if o.restarts {
		// However the run ends, the shared stack is left up.
		defer st.restoreStack()
	}
	gw, err := startGateway(ctx, o, filepath.Join(dir, "gateway.log"), filepath.Join(dir, "blobs"))
	if err != nil {
		logf("%v", err)
		return 2
	}
	defer gw.cleanup(logf)
	if err := gw.createSidecarIndex(ctx); err != nil {
		logf("%v", err)
		return 2
	}
	logf("gateway pid %d on %s (sidecar %s), alias %s; load for %s, restarts %v", gw.cmd.Process.Pid, gw.rest, gw.sidecar, gw.alias, o.duration, o.restarts)

	rec := newRecorder(time.Now())
	loadCtx, stopLoad := context.WithTimeout(ctx, o.duration)
	defer stopLoad()
	rss := sampleRSS(loadCtx, gw, o.sample, rec)
	load := startLoad(loadCtx, o, gw, rec)
	if o.restarts {
		st.restartSchedule(loadCtx, gw, rec)
	}
	<-loadCtx.Done()
	load.Wait()
	samples := rss()
	aborted := ctx.Err() != nil

	// Check the writes on a healthy stack.
	if o.restarts {
		st.restoreStack()
	}
	vctx, vcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer vcancel()
	if err := gw.waitReady(vctx, 3*time.Minute); err != nil {
		logf("gateway not ready for the final check: %v", err)
	}
	lost := verify(vctx, gw, rec)
	r := report{opts: o, rec: rec, rss: samples, lost: lost, aborted: aborted, gw: gw}
	md, pass := r.markdown()
	fmt.Print(md)
	if o.reportPath != "" {
		if err := os.WriteFile(o.reportPath, []byte(md), 0o644); err != nil {
			logf("%v", err)
		}
	}
	if !pass {
		return 1
	}
	return 0
}
