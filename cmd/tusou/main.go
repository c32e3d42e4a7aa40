// Command tusou is the gateway binary: `tusou serve` runs the REST API,
// `tusou config reference` prints the configuration reference, and
// `tusou config check` validates a configuration without starting anything.
// `tusou ingest`, `tusou search` and `tusou models` are clients of a running gateway.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tusou/tusou/app"
	"github.com/tusou/tusou/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tusou:", err)
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

// exitError carries a command's exit status.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// clientContext is cancelled by the first Ctrl-C (SIGINT) or SIGTERM; the
// signals then get their default action back, so a second Ctrl-C quits at once.
func clientContext(stderr io.Writer) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	onSignal := context.AfterFunc(ctx, func() {
		stop()
		fmt.Fprintln(stderr, "\ninterrupted: finishing the requests in flight (Ctrl-C again to quit now)")
	})
	return ctx, func() { onSignal(); stop() }
}

const usage = `usage: tusou <command> [flags]

commands:
  serve              run the gateway (REST API on server.listen)
  config check       load and validate the configuration, list its model generations, then exit
                     (-o json: the resolved generations, for scripts)
  config reference   print the configuration reference (Markdown)
  ingest PATH...     index the images under folders, files or stdin (-) through a gateway
  search             search a gateway by --text, --image FILE or --similar ID
  models             status, switch, rollback, abort, prune the model generations of a gateway
  tune               find the image batcher settings for a p99 target against a live Triton
  version            print the version
`

// setFlags collects repeated --set key=value flags.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

func loadConfig(fs *flag.FlagSet, args []string) (*config.Config, error) {
	path := fs.String("config", os.Getenv("TUSOU_CONFIG"), "YAML configuration file (env TUSOU_CONFIG)")
	listen := fs.String("listen", "", "shorthand for --set server.listen=ADDR")
	var sets setFlags
	fs.Var(&sets, "set", "override one setting, e.g. --set triton.grpc_addr=triton:8001 (repeatable)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if *listen != "" {
		sets = append(sets, "server.listen="+*listen)
	}
	return config.Load(*path, os.Environ(), sets)
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		cfg, err := loadConfig(fs, args[1:])
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return app.Run(ctx, cfg, version)
	case "config":
		if len(args) < 2 {
			return errors.New("config: want check or reference")
		}
		switch args[1] {
		case "check":
			return configCheckCmd(args[2:], stdout)
		case "reference":
			fmt.Fprint(stdout, config.Reference())
			return nil
		}
		return fmt.Errorf("config: unknown subcommand %q (want check or reference)", args[1])
	case "ingest":
		ctx, stop := clientContext(stderr)
		defer stop()
		return ingestCmd(ctx, args[1:], os.Stdin, stdout, stderr)
	case "search":
		ctx, stop := clientContext(stderr)
		defer stop()
		return searchCmd(ctx, args[1:], stdout, stderr)
	case "models":
		ctx, stop := clientContext(stderr)
		defer stop()
		return modelsCmd(ctx, args[1:], stdout, stderr)
	case "tune":
		ctx, stop := clientContext(stderr)
		defer stop()
		return tuneCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "tusou", version)
		return nil
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
