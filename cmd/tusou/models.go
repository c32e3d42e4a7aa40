package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/tusou/tusou/client"
)

const modelsUsage = `usage: tusou models <command> [flags]

Manage the model generations of a running gateway through its admin API. The
admin key (one of the gateway's auth.admin_keys, not an API key) is read from
--api-key or env TUSOU_ADMIN_KEY.

commands:
  status [-o json]                   generations, their indices and document counts, any switch
  switch --to GEN [--detach]         fill GEN's index from the stored originals, verify, then move the alias
  rollback [--detach]                switch back to the previous generation (only the difference is re-embedded)
  abort                              stop the running switch (GEN's index is kept: a later switch resumes)
  prune [--generation GEN] --yes     delete the previous generation's index (or GEN's) for good

switch and rollback follow the switch until it ends, with progress on
stderr; Ctrl-C stops following, not the switch.

Exit status: 0 done; 1 the switch failed or was aborted, or the gateway
refused; 2 bad usage; 130 interrupted while following.
`

// Seams for tests: how often a switch is polled, and after how many polls
// in a row without a gateway running it a switch counts as interrupted
// (behind a load balancer the replica running it answers only some polls).
var (
	modelsPollEvery = 500 * time.Millisecond
	modelsIdlePolls = 120
)

// modelsFlags are the flags every models subcommand takes.
type modelsFlags struct {
	url, adminKey, output *string
}

func addModelsFlags(fs *flag.FlagSet) modelsFlags {
	return modelsFlags{
		url:      addURLFlag(fs),
		adminKey: fs.String("api-key", "", "admin key, one of the gateway's auth.admin_keys (default: env TUSOU_ADMIN_KEY)"),
		output:   fs.String("o", "text", "output: text or json"),
	}
}

// modelsCmd runs `tusou models SUBCOMMAND`.
func modelsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, modelsUsage)
		return nil
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, modelsUsage)
		return exitError{exitUsage, errors.New("models: want status, switch, rollback, abort or prune")}
	}
	sub := args[0]
	fs := flag.NewFlagSet("models "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, modelsUsage+"\nflags:\n"); fs.PrintDefaults() }
	mf := addModelsFlags(fs)
	var to, generation *string
	var detach, yes *bool
	switch sub {
	case "status", "abort":
	case "switch":
		to = fs.String("to", "", "the generation to switch to (required)")
		detach = fs.Bool("detach", false, "return once the switch started instead of following it")
	case "rollback":
		detach = fs.Bool("detach", false, "return once the rollback started instead of following it")
	case "prune":
		generation = fs.String("generation", "", "the generation whose index to delete (default: the previous one)")
		yes = fs.Bool("yes", false, "confirm: the index and its vectors are deleted for good")
	default:
		fmt.Fprint(stderr, modelsUsage)
		return exitError{exitUsage, fmt.Errorf("models: unknown command %q (want status, switch, rollback, abort or prune)", sub)}
	}
	if err := fs.Parse(args[1:]); err != nil {
		return exitError{exitUsage, err}
	}
	if fs.NArg() > 0 {
		return exitError{exitUsage, fmt.Errorf("models %s: unexpected arguments %v", sub, fs.Args())}
	}
	if *mf.output != "text" && *mf.output != "json" {
		return exitError{exitUsage, fmt.Errorf("-o: want text or json, got %q", *mf.output)}
	}
	if to != nil && *to == "" {
		return exitError{exitUsage, errors.New("models switch: --to GEN is required (`tusou models status` lists the generations)")}
	}
	if yes != nil && !*yes {
		what := "the previous generation's index"
		if *generation != "" {
			what = "generation " + *generation + "'s index"
		}
		return exitError{exitUsage, fmt.Errorf("models prune deletes %s and its vectors for good: add --yes to confirm", what)}
	}
	key := *mf.adminKey
	if key == "" {
		key = os.Getenv("TUSOU_ADMIN_KEY")
	}
	c, err := client.New(*mf.url, client.WithAdminKey(key), client.WithUserAgent("tusou/"+version))
	if err != nil {
		return exitError{exitUsage, err}
	}
	out := modelsOutput{w: stdout, json: *mf.output == "json"}
	refused := func(err error) error { return adminError(err, c.URL(), key != "") }
	var s *client.ModelsStatus
	switch sub {
	case "status":
		s, err = c.ModelsStatus(ctx)
	case "abort":
		s, err = c.ModelsAbort(ctx)
	case "prune":
		p, err := c.ModelsPrune(ctx, *generation)
		if err != nil {
			return refused(err)
		}
		if out.json {
			return out.encode(p)
		}
		_, err = fmt.Fprintf(stdout, "deleted index %s of generation %s\n", p.DeletedIndex, p.Generation)
		return err
	case "switch":
		s, err = c.ModelsSwitch(ctx, *to)
	case "rollback":
		s, err = c.ModelsRollback(ctx)
	}
	if err != nil {
		if ctx.Err() != nil && (sub == "switch" || sub == "rollback") {
			fmt.Fprintf(stderr, "interrupted before the gateway answered: `tusou models status` shows whether the %s started\n", sub)
			return exitError{exitInterrupted, ctx.Err()}
		}
		return refused(err)
	}
	if sub == "status" || sub == "abort" {
		return out.status(s)
	}
	if s.Switch == nil {
		return exitError{exitFailed, fmt.Errorf("models %s: the gateway answered without a switch", sub)}
	}
	if *detach || s.Switch.Noop {
		return out.status(s)
	}
	final, err := followSwitch(ctx, c, s, newSwitchProgress(stderr))
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "stopped following; the switch to %s goes on in the gateway: `tusou models status` follows it, `tusou models abort` stops it\n", s.Switch.To)
		return exitError{exitInterrupted, errors.New("interrupted")}
	}
	if final != nil {
		if perr := out.status(final); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		return exitError{exitFailed, refused(err)}
	}
	return nil
}

// followSwitch polls the status every modelsPollEvery until the switch that
// first started ends, and returns the last status: a nil error when the
// alias moved to the target, a nil status when the gateway stopped answering. Behind a load balancer a poll may reach a
// gateway that does not run the switch: only a switch with the same target
// and start time counts as this one, and the alias view decides otherwise.
func followSwitch(ctx context.Context, c *client.Client, first *client.ModelsStatus, p *switchProgress) (*client.ModelsStatus, error) {
	defer p.close()
	to, started := first.Switch.To, first.Switch.StartedAt
	ours := func(sw *client.ModelSwitch) bool {
		return sw != nil && sw.To == to && (started.IsZero() || sw.StartedAt.Equal(started))
	}
	p.update(first.Switch)
	seenNext, idle := first.Next == to, 0
	last := first
	tick := time.NewTicker(modelsPollEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-tick.C:
		}
		s, err := c.ModelsStatus(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return last, err
			}
			return nil, fmt.Errorf("following the switch to %s: %w\nthe switch may go on in the gateway: `tusou models status` follows it", to, err)
		}
		last = s
		sw := s.Switch
		switch {
		case ours(sw) && sw.State == client.SwitchDone:
			return s, nil
		case ours(sw) && sw.Finished():
			msg := sw.Error
			if msg == "" {
				msg = "no reason given"
			}
			return s, fmt.Errorf("the switch to %s %s: %s", to, sw.State, msg)
		case ours(sw) && sw.Running:
			idle = 0
			p.update(sw)
			continue
		case s.Active == to && s.Next == "":
			// Cut over, seen from a gateway that did not run the switch.
			return s, nil
		case s.Next == to:
			seenNext = true
		case seenNext:
			return s, fmt.Errorf("%s-next was removed before the cut-over: the switch to %s was aborted or failed in the gateway that ran it (see its log)",
				s.Alias, to)
		}
		idle++
		p.note(fmt.Sprintf("waiting: the gateway that answered does not run the switch to %s (another replica may)", to))
		if idle >= modelsIdlePolls {
			return s, fmt.Errorf("no gateway reported the switch to %s running for %d polls: it was interrupted (a gateway restart?); `tusou models switch --to %s` resumes it",
				to, idle, to)
		}
	}
}

// adminError explains the admin API's refusals in terms of the settings
// that fix them.
func adminError(err error, url string, keyGiven bool) error {
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	var hint string
	switch {
	case apiErr.Status == http.StatusUnauthorized && !keyGiven:
		hint = "no admin key given: set env TUSOU_ADMIN_KEY (or --api-key) to one of the gateway's auth.admin_keys"
	case apiErr.Status == http.StatusUnauthorized:
		hint = "the gateway refused the admin key (--api-key / env TUSOU_ADMIN_KEY): it must be one of the gateway's auth.admin_keys (the keys of auth.api_keys do not open the admin API)"
	case apiErr.Status == http.StatusForbidden && apiErr.Code == "admin_disabled":
		hint = "the admin API of the gateway at " + url + " is disabled: configure auth.admin_keys there"
	case apiErr.Code == "route_not_found":
		hint = "the gateway at " + url + " does not serve the models admin API (/v1/admin/models): an older version, or one without model generations"
	case apiErr.Code == "switch_in_progress":
		hint = "`tusou models status` follows the running switch, `tusou models abort` stops it"
	case apiErr.Code == "unknown_generation":
		hint = "`tusou models status` lists the configured generations"
	default:
		return err
	}
	return exitError{exitFailed, fmt.Errorf("%w\n%s", err, hint)}
}

// modelsOutput prints results as text or JSON on stdout.
type modelsOutput struct {
	w    io.Writer
	json bool
}

func (o modelsOutput) encode(v any) error {
	enc := json.NewEncoder(o.w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// status prints s: the gateway's JSON as it came (so fields this client
// does not know pass through), or a table.
func (o modelsOutput) status(s *client.ModelsStatus) error {
	if !o.json {
		return writeModelsStatus(o.w, s)
	}
	var buf bytes.Buffer
	if len(s.Raw) == 0 || json.Indent(&buf, s.Raw, "", "  ") != nil {
		return o.encode(s)
	}
	buf.WriteByte('\n')
	_, err := o.w.Write(buf.Bytes())
	return err
}

// writeModelsStatus prints the generations as a table and the switch line.
func writeModelsStatus(w io.Writer, s *client.ModelsStatus) error {
	fmt.Fprintf(w, "alias %s\n", s.Alias)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GENERATION\tROLE\tINDEX\tDOCUMENTS\tIMAGE MODEL\tTEXT MODEL")
	for _, g := range s.Generations {
		index, docs := g.Index, fmt.Sprint(g.Documents)
		if index == "" {
			index = "-"
		}
		if g.Index == "" || g.Documents < 0 {
			docs = "-" // no index
		}
		role := g.Role
		if !g.Configured && role != client.RoleOrphan {
			role += " (not configured)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", g.Name, role, index, docs, g.ImageModel, g.TextModel)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, switchLine(s.Switch))
	return err
}

// switchLine is the one-line account of a switch.
func switchLine(sw *client.ModelSwitch) string {
	switch {
	case sw == nil:
		return "switch: none"
	case sw.State == client.SwitchInterrupted:
		return fmt.Sprintf("switch to %s: interrupted (no switch job runs in the gateway that answered; `tusou models switch --to %s` resumes it, `tusou models abort` drops it)", sw.To, sw.To)
	case sw.Noop:
		return fmt.Sprintf("switch to %s: nothing to do, %s is already active", sw.To, sw.To)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "switch %s -> %s: %s", sw.From, sw.To, sw.State)
	if !sw.FinishedAt.IsZero() && !sw.StartedAt.IsZero() {
		fmt.Fprintf(&b, " in %s", sw.FinishedAt.Sub(sw.StartedAt).Round(time.Second))
	}
	fmt.Fprintf(&b, ", %d/%d scanned, %d created, %d skipped, %d deleted, %d failed, %d missing originals, %.0f docs/s",
		sw.Scanned, sw.Total, sw.Created, sw.Skipped, sw.Deleted, sw.Failed, sw.MissingOriginals, sw.DocsPerSecond)
	if !sw.StartedAt.IsZero() {
		fmt.Fprintf(&b, ", started %s", sw.StartedAt.Format(time.RFC3339))
	}
	if sw.Error != "" {
		fmt.Fprintf(&b, ": %s", sw.Error)
	}
	return b.String()
}

// switchProgress shows a running switch on stderr: one line rewritten in
// place on a terminal, else a line per change, at most one a second (a new
// state is shown at once).
type switchProgress struct {
	w           io.Writer
	tty         bool
	last, noted string
	state       string
	lastAt      time.Time
	shown       bool
}

func newSwitchProgress(stderr io.Writer) *switchProgress {
	f, ok := stderr.(*os.File)
	return &switchProgress{w: stderr, tty: ok && term.IsTerminal(int(f.Fd()))}
}

// progressLine is e.g. "backfilling b: 120/300 (85 docs/s)".
func progressLine(sw *client.ModelSwitch) string {
	line := sw.State + " " + sw.To
	if sw.State == client.SwitchBackfilling || sw.State == client.SwitchReconciling {
		line += fmt.Sprintf(": %d/%d (%.0f docs/s)", sw.Scanned, sw.Total, sw.DocsPerSecond)
	}
	if sw.Failed > 0 {
		line += fmt.Sprintf(", %d failed", sw.Failed)
	}
	if sw.MissingOriginals > 0 {
		line += fmt.Sprintf(", %d missing originals", sw.MissingOriginals)
	}
	return line
}

func (p *switchProgress) update(sw *client.ModelSwitch) {
	line := progressLine(sw)
	p.noted = ""
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.shown = true
		return
	}
	now := time.Now()
	if line == p.last || (sw.State == p.state && now.Sub(p.lastAt) < time.Second) {
		return
	}
	fmt.Fprintln(p.w, line)
	p.last, p.state, p.lastAt = line, sw.State, now
}

// note shows msg once until the next update.
func (p *switchProgress) note(msg string) {
	if msg == p.noted {
		return
	}
	p.noted = msg
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", msg)
		p.shown = true
		return
	}
	fmt.Fprintln(p.w, msg)
}

func (p *switchProgress) close() {
	if p.tty && p.shown {
		fmt.Fprintln(p.w)
	}
}
