package k8s

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// dockerfile is one parsed Dockerfile under deploy/docker/.
type dockerfile struct {
	rel      string // path relative to the repository root
	stages   []instructions.Stage
	metaArgs map[string]string // global ARG defaults
	ignore   *patternmatcher.PatternMatcher
}

// baseImageExceptions allow-lists base images that cannot be pinned by a
// version tag, with the reason.
var baseImageExceptions = map[string]string{
	"gcr.io/distroless/cc-debian12:nonroot": "distroless publishes no versioned tags; releases pin it by digest with --build-arg RUNTIME_IMAGE=...@sha256:... (docs/operations.md \"Images\")",
}

func dockerfiles(t *testing.T) []dockerfile {
	t.Helper()
	root := repoRoot(t)
	paths, err := filepath.Glob(filepath.Join(root, "deploy", "docker", "*.Dockerfile"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no deploy/docker/*.Dockerfile (%v)", err)
	}
	var out []dockerfile
	for _, p := range paths {
		rel, _ := filepath.Rel(root, p)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		res, err := parser.Parse(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		for _, w := range res.Warnings {
			t.Errorf("%s: parser warning: %s", rel, w.Short)
		}
		var lintMsgs []string
		lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
			lintMsgs = append(lintMsgs, fmt.Sprintf("%s: %s", rule, msg))
		}})
		stages, metaArgs, err := instructions.Parse(res.AST, lint)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		for _, m := range lintMsgs {
			t.Errorf("%s: lint %s", rel, m)
		}
		df := dockerfile{rel: rel, stages: stages, metaArgs: map[string]string{}}
		for _, a := range metaArgs {
			for _, kv := range a.Args {
				df.metaArgs[kv.Key] = kv.ValueString()
			}
		}
		f, err := os.Open(p + ".dockerignore")
		if err != nil {
			t.Fatalf("%s: every Dockerfile needs its own %s.dockerignore (the build context is the repository root): %v", rel, filepath.Base(p), err)
		}
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if df.ignore, err = patternmatcher.New(patterns); err != nil {
			t.Fatalf("%s.dockerignore: %v", rel, err)
		}
		out = append(out, df)
	}
	return out
}

func (d dockerfile) ignored(t *testing.T, rel string) bool {
	t.Helper()
	m, err := d.ignore.MatchesOrParentMatches(filepath.ToSlash(rel))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// expand substitutes ${VAR} / $VAR from the given values.
func expand(s string, vals map[string]string) string {
	return os.Expand(s, func(k string) string { return vals[k] })
}

func commands[T any](st instructions.Stage) []T {
	var out []T
	for _, c := range st.Commands {
		if v, ok := c.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func runLine(r *instructions.RunCommand) string { return strings.Join(r.CmdLine, " ") }

var curlPipeShell = regexp.MustCompile(`(curl|wget)[^|;&]*\|\s*(sudo\s+)?(ba)?sh`)

// TestDockerfileLint applies tusou's image rules to every Dockerfile.
func TestDockerfileLint(t *testing.T) {
	root := repoRoot(t)
	for _, d := range dockerfiles(t) {
		t.Run(filepath.Base(d.rel), func(t *testing.T) {
			stageNames := map[string]bool{}
			for i, st := range d.stages {
				base := expand(st.BaseName, d.metaArgs)
				if stageNames[base] {
					// FROM an earlier stage.
				} else if reason, ok := baseImageExceptions[base]; ok {
					if reason == "" {
						t.Errorf("base image exception %s has no reason", base)
					}
				} else if prob := imageProblem(base); prob != "" {
					t.Errorf("stage %d FROM %q %s", i, base, prob)
				} else if tag := base[strings.LastIndex(base, ":")+1:]; !strings.Contains(base, "@sha256:") && !regexp.MustCompile(`\d+\.\d+`).MatchString(tag) {
					t.Errorf("stage %d FROM %q: pin a specific version tag (or a digest)", i, base)
				}
				if st.Name != "" {
					stageNames[st.Name] = true
				}
				for _, a := range commands[*instructions.AddCommand](st) {
					t.Errorf("line %d: ADD %v: use COPY (ADD fetches URLs and unpacks archives implicitly)", a.Location()[0].Start.Line, a.SourcePaths)
				}
				for _, r := range commands[*instructions.RunCommand](st) {
					line := runLine(r)
					if strings.Contains(line, "apt-get install") {
						if !strings.Contains(line, "--no-install-recommends") || !strings.Contains(line, "rm -rf /var/lib/apt/lists") {
							t.Errorf("RUN %q: apt-get install needs --no-install-recommends and rm -rf /var/lib/apt/lists/* in the same layer", line)
						}
						if !strings.Contains(line, "apt-get update") {
							t.Errorf("RUN %q: apt-get install without apt-get update in the same layer uses a stale index", line)
						}
					}
					if strings.Contains(line, "pip install") && !strings.Contains(line, "--no-cache-dir") {
						t.Errorf("RUN %q: pip install without --no-cache-dir", line)
					}
					if curlPipeShell.MatchString(line) {
						t.Errorf("RUN %q: piping a download into a shell", line)
					}
				}
				for _, c := range commands[*instructions.CopyCommand](st) {
					if c.From != "" {
						continue
					}
					for _, src := range c.SourcePaths {
						if src == "." {
							continue
						}
						if _, err := os.Stat(filepath.Join(root, src)); err != nil {
							t.Errorf("COPY %s: not in the repository", src)
						} else if d.ignored(t, src) {
							t.Errorf("COPY %s: excluded by %s.dockerignore", src, filepath.Base(d.rel))
						}
					}
				}
			}
			final := d.stages[len(d.stages)-1]
			users := commands[*instructions.UserCommand](final)
			if len(users) == 0 {
				t.Fatal("final stage has no USER: the image would run as root")
			}
			user := users[len(users)-1].User
			if name, _, _ := strings.Cut(user, ":"); name == "" || name == "0" || name == "root" {
				t.Errorf("final stage USER %q is root", user)
			} else if !regexp.MustCompile(`^\d+:\d+$`).MatchString(user) {
				t.Errorf("final stage USER %q: use numeric uid:gid so runAsNonRoot can verify it", user)
			}
			for _, c := range commands[*instructions.CopyCommand](final) {
				if c.Chown != "" && c.Chown != user {
					t.Errorf("COPY --chown=%s in the final stage: the only writable owner should be the runtime USER %s", c.Chown, user)
				}
			}
			eps := commands[*instructions.EntrypointCommand](final)
			if len(eps) == 0 || eps[len(eps)-1].PrependShell {
				t.Error("final stage needs an exec-form ENTRYPOINT [\"...\"] (a shell would swallow SIGTERM)")
			}
			for _, must := range []string{".git", ".local"} {
				if !d.ignored(t, must) {
					t.Errorf("%s.dockerignore does not exclude %s", filepath.Base(d.rel), must)
				}
			}
		})
	}
}

func findDockerfile(t *testing.T, name string) dockerfile {
	t.Helper()
	for _, d := range dockerfiles(t) {
		if filepath.Base(d.rel) == name {
			return d
		}
	}
	t.Fatalf("deploy/docker/%s not found", name)
	return dockerfile{}
}

type envMap map[string]string

func (e envMap) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e envMap) Keys() []string {
	var ks []string
	for k := range e {
		ks = append(ks, k)
	}
	return ks
}

// goBuildLine is the gateway Dockerfile's go build command, parsed.
type goBuildLine struct {
	env  []string // NAME=value words before `go`
	args []string // after `go build`
	out  string   // -o value
	pkg  string   // last argument
}

func parseGoBuild(t *testing.T, d dockerfile, version string) goBuildLine {
	t.Helper()
	var found []*instructions.RunCommand
	for _, st := range d.stages {
		for _, r := range commands[*instructions.RunCommand](st) {
			if strings.Contains(runLine(r), "go build") {
				found = append(found, r)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one RUN with `go build` in %s, found %d", d.rel, len(found))
	}
	words, err := shell.NewLex('\\').ProcessWords(runLine(found[0]), envMap{"VERSION": version})
	if err != nil {
		t.Fatalf("go build line: %v", err)
	}
	var g goBuildLine
	i := 0
	for ; i < len(words) && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(words[i]); i++ {
		g.env = append(g.env, words[i])
	}
	if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
		t.Fatalf("the go build RUN must be `[NAME=value ...] go build ...` and nothing else, got %q", words)
	}
	g.args = words[i+2:]
	for j, a := range g.args {
		if a == "-o" && j+1 < len(g.args) {
			g.out = g.args[j+1]
		}
		if strings.Contains(a, "&&") || a == ";" || a == "|" {
			t.Fatalf("the go build RUN must hold only the go build command, got %q", words)
		}
	}
	g.pkg = g.args[len(g.args)-1]
	return g
}

// gatewayBuild is the result of building the gateway once per test run
// with the Dockerfile's own go build line.
type gatewayBuild struct {
	bin, version string
	line         goBuildLine
	err          string // why the build failed
}

var (
	gatewayOnce   sync.Once
	gatewayResult gatewayBuild
)

// buildGateway runs the gateway Dockerfile's go build command on the main
// module (once per test run) and returns the binary; a failed build fails
// the caller.
func buildGateway(t *testing.T) gatewayBuild {
	t.Helper()
	root := repoRoot(t)
	d := findDockerfile(t, "gateway.Dockerfile")
	gatewayOnce.Do(func() {
		r := &gatewayResult
		r.version = fmt.Sprintf("k8s-test-%d", time.Now().UnixNano())
		r.line = parseGoBuild(t, d, r.version)
		goFiles, _ := filepath.Glob(filepath.Join(root, "cmd", "tusou", "*.go"))
		if len(goFiles) == 0 {
			r.err = "./cmd/tusou is missing: the Dockerfile's go build line cannot be run"
			return
		}
		if r.line.out == "" {
			r.err = "the go build line has no -o"
			return
		}
		r.bin = filepath.Join(scratchDir, "tusou")
		args := slices.Clone(r.line.args)
		args[slices.Index(args, "-o")+1] = r.bin
		// A cold -trimpath build of the gateway takes minutes on a small,
		// busy machine; run `go test` with -timeout 30m.
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
		defer cancel()
		build := exec.CommandContext(ctx, "go", append([]string{"build"}, args...)...)
		build.Dir = root
		build.Env = append(os.Environ(), r.line.env...)
		if out, err := build.CombinedOutput(); err != nil {
			r.err = fmt.Sprintf("go build %s (the Dockerfile's command): %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	r := gatewayResult
	if r.err != "" {
		t.Fatal(r.err)
	}
	return r
}

// TestGatewayDockerfileBuild checks the gateway Dockerfile's go build line
// (the flags a release needs), then builds the main module with exactly that
// command and checks the binary: it reports the injected version, and needs
// no shared library that the runtime image lacks.
func TestGatewayDockerfileBuild(t *testing.T) {
	root := repoRoot(t)
	d := findDockerfile(t, "gateway.Dockerfile")
	version := "check-version"
	g := parseGoBuild(t, d, version)

	if !slices.Contains(g.env, "CGO_ENABLED=1") {
		t.Errorf("go build env %v: CGO_ENABLED=1 is required (preprocess uses libjpeg-turbo through cgo)", g.env)
	}
	if !slices.Contains(g.args, "-trimpath") {
		t.Error("go build without -trimpath")
	}
	ld := ""
	if i := slices.Index(g.args, "-ldflags"); i >= 0 && i+1 < len(g.args) {
		ld = g.args[i+1]
	}
	for _, f := range []string{"-s", "-w", "-X main.version=" + version} {
		if !strings.Contains(" "+ld+" ", " "+f+" ") {
			t.Errorf("-ldflags %q lacks %q", ld, f)
		}
	}
	if g.pkg != "./cmd/tusou" || g.out == "" {
		t.Errorf("go build must build ./cmd/tusou with -o, got package %q -o %q", g.pkg, g.out)
	}
	// The builder image's Go is the go.mod Go's release (same major.minor)
	// at a patch level no older than the go line: go.mod states a minimum
	// (1.26.0, so any 1.26 toolchain builds without a download) while the
	// image pins the exact patch release.
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(?:\.(\d+))?$`).FindSubmatch(gomod)
	goImage := d.metaArgs["GO_IMAGE"]
	im := regexp.MustCompile(`^golang:(\d+)\.(\d+)\.(\d+)-`).FindStringSubmatch(goImage)
	patch := func(b []byte) int { n, _ := strconv.Atoi(string(b)); return n }
	if m == nil || im == nil || im[1] != string(m[1]) || im[2] != string(m[2]) || patch([]byte(im[3])) < patch(m[3]) {
		t.Errorf("GO_IMAGE %q is not a Go release matching go.mod's go line", goImage)
	}

	b := buildGateway(t)

	// The build context must carry every package the binary is built from.
	list := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "./cmd/tusou")
	list.Dir = root
	listOut, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/tusou: %v\n%s", err, listOut)
	}
	for _, dir := range strings.Fields(string(listOut)) {
		if rel, err := filepath.Rel(root, dir); err == nil && !strings.HasPrefix(rel, "..") {
			if d.ignored(t, rel) {
				t.Errorf("package dir %s is excluded by gateway.Dockerfile.dockerignore, so the image build would fail", rel)
			}
		}
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if d.ignored(t, f) {
			t.Errorf("%s is excluded by gateway.Dockerfile.dockerignore", f)
		}
	}

	// Every C library the gateway links has its -dev package in the builder.
	ldList := exec.Command("go", "list", "-deps", "-f", "{{join .CgoLDFLAGS \" \"}}", "./cmd/tusou")
	ldList.Dir = root
	ldOut, err := ldList.CombinedOutput()
	if err != nil {
		t.Fatalf("go list CgoLDFLAGS: %v\n%s", err, ldOut)
	}
	var aptPkgs []string
	for _, st := range d.stages {
		for _, r := range commands[*instructions.RunCommand](st) {
			if line := runLine(r); strings.Contains(line, "apt-get install") {
				aptPkgs = append(aptPkgs, strings.Fields(line)...)
			}
		}
	}
	for _, flag := range strings.Fields(string(ldOut)) {
		lib, ok := strings.CutPrefix(flag, "-l")
		if !ok || lib == "" || slices.Contains(glibcLinkNames, lib) {
			continue
		}
		if !slices.ContainsFunc(aptPkgs, func(p string) bool {
			return strings.HasSuffix(p, "-dev") && strings.Contains(p, lib)
		}) {
			t.Errorf("the gateway links -l%s (cgo), but the builder stage installs no matching -dev package", lib)
		}
	}

	var versionOut []byte
	ok := false
	for _, flag := range []string{"--version", "version"} {
		out, err := exec.Command(b.bin, flag).CombinedOutput()
		if err == nil && bytes.Contains(out, []byte(b.version)) {
			ok = true
			break
		}
		versionOut = append(versionOut, fmt.Sprintf("$ tusou %s: %v\n%s", flag, err, out)...)
	}
	if !ok {
		t.Errorf("the built binary does not report the version injected with -X main.version=%s via `tusou --version` (or `tusou version`); main must declare `var version string` and print it:\n%s", b.version, versionOut)
	}
	if runtime.GOOS == "linux" {
		checkSharedLibs(t, d, b.bin)
	}
}

// glibcLinkNames are -l names libc6-dev (in every golang image) provides.
var glibcLinkNames = []string{"c", "m", "pthread", "dl", "rt", "resolv", "util", "anl"}

// runtimeImageLibs are the shared libraries gcr.io/distroless/cc-debian12
// ships (glibc, libgcc, libstdc++).
var runtimeImageLibs = []string{
	"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libresolv.so.2",
	"ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libgcc_s.so.1", "libstdc++.so.6",
}

var soName = regexp.MustCompile(`lib[A-Za-z0-9_+-]+\.so\.[0-9]+`)

// checkSharedLibs: every DT_NEEDED library of the binary is in the runtime
// image or copied into it by the Dockerfile, and copied libraries themselves
// need only what the runtime image has.
func checkSharedLibs(t *testing.T, d dockerfile, bin string) {
	t.Helper()
	copied := map[string]bool{}
	for _, st := range d.stages[:len(d.stages)-1] {
		for _, r := range commands[*instructions.RunCommand](st) {
			line := runLine(r)
			if strings.Contains(line, "cp ") {
				for _, lib := range soName.FindAllString(line, -1) {
					copied[lib] = true
				}
			}
		}
	}
	needed := func(path string) []string {
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer f.Close()
		libs, err := f.ImportedLibraries()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return libs
	}
	for _, lib := range needed(bin) {
		if slices.Contains(runtimeImageLibs, lib) || copied[lib] {
			continue
		}
		t.Errorf("the binary needs %s, which the runtime image lacks and the Dockerfile does not copy", lib)
	}
	for lib := range copied {
		matches, _ := filepath.Glob(filepath.Join("/usr/lib/*-linux-gnu", lib))
		if len(matches) == 0 {
			t.Logf("%s is not installed on this machine; its own dependencies are not checked", lib)
			continue
		}
		for _, dep := range needed(matches[0]) {
			if !slices.Contains(runtimeImageLibs, dep) && !copied[dep] {
				t.Errorf("%s (copied into the image) needs %s, which the runtime image lacks", lib, dep)
			}
		}
	}
}

// TestExportDockerfile: the export image installs exactly the pinned
// requirements of the export tooling and runs the entrypoint that builds the
// model repository.
func TestExportDockerfile(t *testing.T) {
	root := repoRoot(t)
	d := findDockerfile(t, "export.Dockerfile")
	final := d.stages[len(d.stages)-1]
	const req = "model_repository/export/requirements.txt"
	installs := false
	for _, r := range commands[*instructions.RunCommand](final) {
		if strings.Contains(runLine(r), "pip install") && strings.Contains(runLine(r), "-r "+req) {
			installs = true
		}
	}
	if !installs {
		t.Errorf("export.Dockerfile must `pip install -r %s`", req)
	}
	if img := d.metaArgs["PYTHON_IMAGE"]; !strings.HasPrefix(img, "python:3.11.") {
		t.Errorf("PYTHON_IMAGE %q: the export tooling targets Python 3.11", img)
	}
	eps := commands[*instructions.EntrypointCommand](final)
	if len(eps) == 0 || !slices.Contains(eps[len(eps)-1].CmdLine, "/opt/tusou/bin/export-entrypoint.sh") {
		t.Error("export image must run /opt/tusou/bin/export-entrypoint.sh")
	}
	data, err := os.ReadFile(filepath.Join(root, req))
	if os.IsNotExist(err) {
		t.Fatalf("%s is missing: the export image's pins cannot be checked", req)
	}
	if err != nil {
		t.Fatal(err)
	}
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(strings.SplitN(line, "#", 2)[0])
		if line == "" || strings.HasPrefix(line, "-") {
			continue
		}
		if !strings.Contains(line, "==") {
			t.Errorf("%s:%d: %q is not pinned with ==", req, n+1, line)
		}
	}
}
