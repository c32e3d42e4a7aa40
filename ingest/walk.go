package ingest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// entry is one regular file found by the walk.
type entry struct {
	// path is what is opened; rel is the relative_path metadata (slash-separated).
	path, rel string
}

// walker turns the PATH arguments into files: folders recursively (following
// symbolic links, refusing loops), files as given, "-" as a list of paths on
// stdin. Problems with a path are recorded, never fatal.
type walker struct {
	out   chan<- entry
	rec   *recorder
	stdin io.Reader
}

func (w *walker) run(ctx context.Context, paths []string) error {
	for _, p := range paths {
		if ctx.Err() != nil {
			return nil
		}
		if p != "-" {
			w.root(ctx, p)
			continue
		}
		if w.stdin == nil {
			return errors.New(`"-" given but there is no standard input`)
		}
		sc := bufio.NewScanner(w.stdin)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() && ctx.Err() == nil {
			if line := strings.TrimRight(sc.Text(), "\r"); line != "" {
				w.root(ctx, line)
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("reading paths from standard input: %w", err)
		}
	}
	return nil
}

// root handles one path as given by the user.
func (w *walker) root(ctx context.Context, p string) {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		w.problem(p, err, true)
	case fi.IsDir():
		w.dir(ctx, p, "", []os.FileInfo{fi})
	case fi.Mode().IsRegular():
		w.file(ctx, entry{path: p, rel: givenRel(p)})
	default:
		w.rec.problem(ReportLine{Path: p, Status: StatusSkipped, Error: detail("not_a_file", "%s is neither a regular file nor a folder", p)})
	}
}

// givenRel is the relative_path of a file named directly: the path as given
// when it is relative and stays below the working directory, else its base name.
func givenRel(p string) string {
	c := filepath.Clean(p)
	if filepath.IsAbs(c) || c == ".." || strings.HasPrefix(c, ".."+string(filepath.Separator)) {
		return filepath.Base(c)
	}
	return filepath.ToSlash(c)
}

// dir walks one folder in name order; ancestors are the folders above it
// (as reached, links resolved), so that a link back up is caught as a loop.
func (w *walker) dir(ctx context.Context, dir, rel string, ancestors []os.FileInfo) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		// ReadDir returns what it read before the error: walk that too.
		w.problem(dir, err, true)
	}
	for _, e := range ents {
		if ctx.Err() != nil {
			return
		}
		full, r := filepath.Join(dir, e.Name()), path.Join(rel, e.Name())
		var fi os.FileInfo
		if e.Type()&fs.ModeSymlink != 0 {
			if fi, err = os.Stat(full); err != nil {
				w.problem(full, err, false)
				continue
			}
		} else if e.IsDir() {
			if fi, err = e.Info(); err != nil {
				w.problem(full, err, true)
				continue
			}
		}
		switch {
		case fi != nil && fi.IsDir():
			if loopsBack(fi, ancestors) {
				w.rec.problem(ReportLine{Path: full, Status: StatusSkipped,
					Error: detail("symlink_loop", "%s links back to a folder above it; not followed", full)})
				continue
			}
			w.dir(ctx, full, r, append(ancestors[:len(ancestors):len(ancestors)], fi))
		case (fi != nil && fi.Mode().IsRegular()) || (fi == nil && e.Type().IsRegular()):
			w.file(ctx, entry{path: full, rel: r})
		}
		// Sockets, devices and pipes are not photos: ignored.
	}
}

func loopsBack(fi os.FileInfo, ancestors []os.FileInfo) bool {
	for _, a := range ancestors {
		if os.SameFile(fi, a) {
			return true
		}
	}
	return false
}

func (w *walker) file(ctx context.Context, e entry) {
	w.rec.found()
	select {
	case w.out <- e:
	case <-ctx.Done():
	}
}

// problem records a path that could not be walked. A missing path the user
// named, or an unreadable one, is a failure; a link loop or a dangling link
// inside a folder is only skipped.
func (w *walker) problem(p string, err error, named bool) {
	switch {
	case errors.Is(err, syscall.ELOOP):
		w.rec.problem(ReportLine{Path: p, Status: StatusSkipped, Error: detail("symlink_loop", "%s: symbolic link loop; not followed", p)})
	case errors.Is(err, fs.ErrNotExist) && !named:
		w.rec.problem(ReportLine{Path: p, Status: StatusSkipped, Error: detail("broken_symlink", "%s: symbolic link to nothing", p)})
	case errors.Is(err, fs.ErrNotExist):
		w.rec.problem(ReportLine{Path: p, Status: StatusFailed, Error: detail("not_found", "%s does not exist", p)})
	default:
		w.rec.problem(ReportLine{Path: p, Status: StatusFailed, Error: detail("unreadable", "%v", err)})
	}
}
