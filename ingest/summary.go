package ingest

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// maxListed bounds the near-duplicates listed in the text summary; the
// report has them all.
const maxListed = 20

// WriteText prints the summary for a person. report is the report's path
// ("" when there is none).
func (s Summary) WriteText(w io.Writer, report string) {
	elapsed := time.Duration(s.ElapsedSeconds * float64(time.Second)).Round(time.Millisecond)
	switch {
	case s.Aborted != "":
		fmt.Fprintf(w, "ingest aborted after %s: %s\n", elapsed, s.Aborted)
	case s.Interrupted:
		fmt.Fprintf(w, "ingest interrupted after %s: %d of %d files not done; run the same command again to continue\n",
			elapsed, s.Files-s.Done(), s.Files)
	default:
		fmt.Fprintf(w, "ingest done in %s\n", elapsed)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, n int, note string) {
		fmt.Fprintf(tw, "  %s\t%d\t %s\n", name, n, note)
	}
	row("files found", s.Files, "")
	row("indexed", s.Indexed, "new")
	row("already indexed", s.AlreadyIndexed, "skipped without uploading (same content-hash id)")
	row("duplicates", s.Duplicates, "same bytes as another file of this run")
	row("failed", s.Failed, "")
	if s.Unsupported > 0 {
		row("unsupported", s.Unsupported, "image formats tusou does not decode")
	}
	row("not images", s.NotImages, "")
	if s.Skipped > 0 {
		row("skipped paths", s.Skipped, "symbolic link loops, dangling links")
	}
	secs := max(s.ElapsedSeconds, 1e-9)
	row("uploaded", s.UploadedFiles, fmt.Sprintf("files, %s in %d requests, %.1f files/s, %s/s",
		humanBytes(float64(s.UploadedBytes)), s.Requests, float64(s.UploadedFiles)/secs, humanBytes(float64(s.UploadedBytes)/secs)))
	tw.Flush()
	if len(s.NearDuplicates) > 0 {
		fmt.Fprintf(w, "near-duplicates of %d new files:\n", len(s.NearDuplicates))
		listed, total := 0, 0
		for _, p := range s.NearDuplicates {
			for _, d := range p.NearDuplicates {
				if total++; listed == maxListed {
					continue
				}
				listed++
				other := d.Path
				if other == "" {
					other = "id " + d.ID
				}
				fmt.Fprintf(w, "  %s ~ %s (%.3f)\n", p.Path, other, d.Score)
			}
		}
		if total > listed {
			fmt.Fprintf(w, "  … %d more in the report\n", total-listed)
		}
	}
	if report != "" && s.ReportLines > 0 {
		fmt.Fprintf(w, "report: %s (%d lines)\n", report, s.ReportLines)
	}
	if !s.Searchable && !s.Interrupted && s.Aborted == "" {
		fmt.Fprintln(w, "note: the final refresh did not complete; new images are searchable within the index refresh interval")
	}
}
