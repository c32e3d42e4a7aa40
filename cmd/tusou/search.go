package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/tusou/tusou/client"
)

const searchUsage = `usage: tusou search (--text "..." | --image FILE | --similar ID) [flags]

Search a running gateway from the shell: by text, by an image file, or for
the images most like an indexed one.

flags:
`

func searchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("search", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, searchUsage); fs.PrintDefaults() }
	gw := addGatewayFlags(fs)
	text := fs.String("text", "", "search by this text")
	image := fs.String("image", "", "search by this image file")
	similar := fs.String("similar", "", "images most like the indexed image with this id")
	k := fs.Int("k", 10, "number of hits")
	var minScore *float64
	fs.Func("min-score", "drop hits below this cosine (-1..1)", func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		minScore = &f
		return err
	})
	filter := fs.String("filter", "", `metadata filter, a JSON object: {"album":["pets","zoo"]}`)
	output := fs.String("o", "table", "output: table or json")
	if err := fs.Parse(args); err != nil {
		return exitError{exitUsage, err}
	}
	if fs.NArg() > 0 {
		return exitError{exitUsage, fmt.Errorf("search: unexpected arguments %v", fs.Args())}
	}
	given := 0
	for _, s := range []string{*text, *image, *similar} {
		if s != "" {
			given++
		}
	}
	if given != 1 {
		fs.Usage()
		return exitError{exitUsage, errors.New("search: give exactly one of --text, --image, --similar")}
	}
	if *output != "table" && *output != "json" {
		return exitError{exitUsage, fmt.Errorf("-o: want table or json, got %q", *output)}
	}
	q := client.Query{K: *k, MinScore: minScore}
	if *filter != "" {
		if err := json.Unmarshal([]byte(*filter), &q.Filter); err != nil || q.Filter == nil {
			return exitError{exitUsage, fmt.Errorf("--filter: want a JSON object, got %q", *filter)}
		}
	}
	c, err := gw.client()
	if err != nil {
		return exitError{exitUsage, err}
	}
	var res *client.SearchResponse
	switch {
	case *text != "":
		res, err = c.SearchText(ctx, *text, q)
	case *image != "":
		data, rerr := os.ReadFile(*image)
		if rerr != nil {
			return exitError{exitUsage, rerr}
		}
		res, err = c.SearchImage(ctx, data, q)
	default:
		res, err = c.Similar(ctx, *similar, q)
	}
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(res)
	}
	return writeHits(stdout, res)
}

// writeHits prints hits as a table: rank, score, id, and where the image
// came from when ingest recorded it.
func writeHits(w io.Writer, res *client.SearchResponse) error {
	if len(res.Hits) == 0 {
		_, err := fmt.Fprintf(w, "no hits (%d ms)\n", res.TookMS)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tSCORE\tID\tPATH")
	for i, h := range res.Hits {
		where, _ := h.Metadata["relative_path"].(string)
		if where == "" {
			where, _ = h.Metadata["image_name"].(string)
		}
		fmt.Fprintf(tw, "%d\t%.4f\t%s\t%s\n", i+1, h.Score, h.ID, where)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d hits in %d ms\n", len(res.Hits), res.TookMS)
	return err
}
