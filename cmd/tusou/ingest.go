package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/tusou/tusou/client"
	"github.com/tusou/tusou/ingest"
)

// Exit statuses of `tusou ingest` (documented in its usage).
const (
	exitFailed      = 1   // some files failed
	exitUsage       = 2   // bad flags, or the run was aborted (gateway unreachable, key refused)
	exitInterrupted = 130 // 128+SIGINT, as shells report it
)

const ingestUsage = `usage: tusou ingest [flags] PATH...

Index the images under each PATH (folders recursively, files, or "-" for a
list of paths on stdin) through a running gateway. Images are recognised by
content. Files whose content is already indexed are skipped without uploading
them, so an interrupted run continues where it stopped when run again.

Each image gets the metadata image_name (file name) and relative_path (below
the PATH given), plus every --metadata.

Exit status: 0 all done; 1 some files failed (see --report); 2 bad usage, or
the run was aborted (gateway unreachable, API key refused); 130 interrupted.

flags:
`

// gatewayFlags are the flags every client command shares.
type gatewayFlags struct{ url, apiKey *string }

func addGatewayFlags(fs *flag.FlagSet) gatewayFlags {
	return gatewayFlags{
		url:    addURLFlag(fs),
		apiKey: fs.String("api-key", "", "API key (default: env TUSOU_API_KEY)"),
	}
}

// addURLFlag is the gateway URL flag, defaulting to env TUSOU_URL.
func addURLFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("TUSOU_URL")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	return fs.String("url", def, "gateway base URL (env TUSOU_URL)")
}

func (g gatewayFlags) client() (*client.Client, error) {
	key := *g.apiKey
	if key == "" {
		key = os.Getenv("TUSOU_API_KEY")
	}
	return client.New(*g.url, client.WithAPIKey(key), client.WithUserAgent("tusou/"+version))
}

// metadataFlags collects repeated --metadata key=value flags.
type metadataFlags map[string]any

func (m metadataFlags) String() string { return fmt.Sprint(map[string]any(m)) }
func (m metadataFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	m[k] = val
	return nil
}

// parseInterspersed lets flags follow the paths (tusou ingest ./photos --workers 8).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return rest, nil
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func ingestCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ingestUsage); fs.PrintDefaults() }
	gw := addGatewayFlags(fs)
	workers := fs.Int("workers", 4, "ingest requests in flight at once")
	batch := fs.Int("batch", 16, "most files per request (the gateway's server.max_files is 64 by default)")
	batchMB := fs.Int("batch-mb", 16, "most MiB per request (the gateway's server.max_body_bytes is 48 MiB by default)")
	metadata := metadataFlags{}
	fs.Var(metadata, "metadata", "key=value stored with every image of the run (repeatable)")
	report := fs.String("report", "tusou-ingest-report.jsonl", `JSONL report of the files that need a look (failed, unsupported, duplicates); "" for none`)
	dups := fs.Bool("report-duplicates", false, "ask the gateway for near-duplicates of each new image and list them")
	progress := fs.String("progress", "auto", "auto (a bar on a terminal, else lines), bar, lines or off")
	output := fs.String("o", "text", "summary format: text or json")
	paths, err := parseInterspersed(fs, args)
	if err != nil {
		return exitError{exitUsage, err}
	}
	if len(paths) == 0 {
		fs.Usage()
		return exitError{exitUsage, errors.New("ingest: no PATH given")}
	}
	if *output != "text" && *output != "json" {
		return exitError{exitUsage, fmt.Errorf("-o: want text or json, got %q", *output)}
	}
	mode, err := progressMode(*progress, stderr)
	if err != nil {
		return exitError{exitUsage, err}
	}
	c, err := gw.client()
	if err != nil {
		return exitError{exitUsage, err}
	}
	opts := ingest.Options{Paths: paths, Stdin: stdin, Gateway: c, Workers: *workers, BatchFiles: *batch,
		BatchBytes: int64(*batchMB) << 20, NearDuplicates: *dups}
	if len(metadata) > 0 {
		opts.Metadata = metadata
	}
	if *report != "" {
		f, err := os.Create(*report)
		if err != nil {
			return exitError{exitUsage, fmt.Errorf("--report: %w", err)}
		}
		defer f.Close()
		opts.Report = f
	}
	opts.Progress = newProgress(mode, stderr)
	s, runErr := ingest.Run(ctx, opts)
	if opts.Progress != nil {
		opts.Progress.Close()
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(s)
	} else {
		s.WriteText(stdout, *report)
	}
	switch {
	case runErr != nil:
		return exitError{exitUsage, runErr}
	case s.Interrupted:
		return exitError{exitInterrupted, errors.New("interrupted")}
	case s.Failed > 0:
		msg := fmt.Sprintf("%d failed", s.Failed)
		if *report != "" {
			msg += " (see " + *report + ")"
		}
		return exitError{exitFailed, errors.New(msg)}
	}
	return nil
}

// progressMode resolves "auto": a bar on a terminal, plain lines elsewhere.
func progressMode(mode string, stderr io.Writer) (string, error) {
	switch mode {
	case "auto":
		if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return "bar", nil
		}
		return "lines", nil
	case "bar", "lines", "off":
		return mode, nil
	}
	return "", fmt.Errorf("--progress: want auto, bar, lines or off, got %q", mode)
}

func newProgress(mode string, stderr io.Writer) ingest.Progress {
	switch mode {
	case "bar":
		return ingest.NewBar(stderr)
	case "lines":
		return ingest.NewLines(stderr, 10*time.Second)
	}
	return nil
}
