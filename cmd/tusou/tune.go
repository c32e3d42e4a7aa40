package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/tusou/tusou/tune"
)

const tuneUsage = `usage: tusou tune [flags]

Find the gateway's image batcher settings for a latency target: sweeps
max_batch_size, max_delay and max_inflight at several offered loads against a
live Triton (triton.grpc_addr, or --triton), running the gateway's own decode,
preprocess and batcher code in-process, and prints the table, the best
setting under --p99 and the configuration lines to use. Writes report.md and
plot.svg to --out. See docs/operations.md §4.

flags:
`

func tuneCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tune", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, tuneUsage); fs.PrintDefaults() }
	var o tune.Options
	o.Register(fs)
	addr := fs.String("triton", "", "Triton gRPC address, shorthand for --set triton.grpc_addr=ADDR")
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return exitError{exitUsage, err}
	}
	if *addr != "" {
		cfg.Triton.GRPCAddr = *addr
		if err := cfg.Validate(); err != nil {
			return exitError{exitUsage, err}
		}
	}
	return tune.Main(ctx, cfg, o, stdout, zap.NewNop())
}
