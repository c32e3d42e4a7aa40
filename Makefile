# tusou — run `make help` for the targets. A new user needs only `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Every build, vet and test compiles with -trimpath, like the release image does, so
# they all share one build cache (a cold cache is most of CI's time).
export GOFLAGS ?= -trimpath
# Packages whose unit tests run again under -race in `make test`: all but the
# single-goroutine compute packages, whose tests are slowest under the race
# detector (measured on the 2-core box: preprocess 62 s, tokenizer 20 s).
RACE_PKGS ?= $(shell $(GO) list ./... | grep -v -e /preprocess -e /tokenizer -e /inferencepb)
# Integration tests share one Elasticsearch and one Triton: run packages one at a time.
ITEST_FLAGS ?= -count=1 -p 1 -timeout 20m

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install missing system packages (Debian, as root; idempotent). `make test` and `make up` run it; `make build` does not
	@deploy/local/deps.sh

.PHONY: build
build: ## build bin/tusou (cgo: libjpeg-turbo and libpng headers; `make deps` installs them)
	@printf '#include <turbojpeg.h>\n#include <png.h>\n' | $${CC:-cc} -E -x c - >/dev/null 2>&1 || { \
	  echo "build: the C compiler or the libjpeg-turbo/libpng headers are missing: run 'make deps' (as root)" >&2; \
	  echo "build: or: apt-get install -y gcc libturbojpeg0-dev libpng-dev pkg-config" >&2; exit 1; }
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/tusou ./cmd/tusou

.PHONY: up
up: deps ## start the local stack: Elasticsearch :9200, the secured Elasticsearch https://127.0.0.1:9250 (credentials in .local/es-secure.env), Triton :8000/:8001/:8002 and S3Proxy :9000 (bucket tusou-originals, credentials in .local/s3.env) (idempotent)
	@deploy/local/stack.sh up

.PHONY: down
down: ## stop exactly what `make up` started
	@deploy/local/stack.sh down

.PHONY: status
status: ## show the local stack's state
	@deploy/local/stack.sh status

.PHONY: run
run: up build ## start the stack, then the gateway in the foreground on :8080
	bin/tusou serve $(LOCAL_CONFIG) --set log.format=console --set text.tokenizer_path=$(LOCAL_TOKENIZER)

# The tokenizer of the clip_text model `make up` serves: the exported real
# one when present (then the stack serves the real models), else the tiny one.
LOCAL_TOKENIZER = $(firstword $(wildcard model_repository/clip_text/tokenizer.json) model_repository/tiny/clip_text/tokenizer.json)
# On the tiny models the gateway serves two generations (versions 1 and 2) so a
# model switch can be tried; exported real models are one generation.
LOCAL_CONFIG = $(if $(wildcard model_repository/clip_text/tokenizer.json),,--config deploy/local/tusou.yaml)

.PHONY: test
test: deps up build sidecar-venv ## everything CI runs: checks, unit tests, integration tests on the real stack
	$(MAKE) --no-print-directory check
	@# The unit tier under the race detector: the tiers below run without it (it slows
	@# the real-stack tests several times over and they run the same code).
	$(GO) test -race -count=1 $(RACE_PKGS)
	@# One run covers both tiers: the integration tag adds the real-stack tests to the unit tests.
	TUSOU_E2E_BIN=$(CURDIR)/bin/tusou $(GO) test -tags integration $(ITEST_FLAGS) ./...
	cd k8s && $(GO) test -count=1 -timeout 30m ./...
	@# Every fuzz target for 500 inputs beyond its seeds (a count, not a time: a time can run
	@# out while the seed corpus is still being measured, which go test reports as a failure;
	@# `make fuzz` runs them for FUZZTIME each).
	FUZZTIME=500x FUZZ_PARALLEL=1 scripts/fuzz.sh
	@echo "make test: all passed"

.PHONY: check
check: ## static checks: gofmt, go vet, generated code and docs in sync
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet -tags integration ./...   # the tag adds the integration tests to every package
	CGO_ENABLED=0 $(GO) vet ./preprocess/   # the pure-Go fallback keeps building
	scripts/check-proto-drift.sh

.PHONY: bench
bench: deps up ## benchmarks (slow, not in CI): preprocessing vs Pillow on real 1-12 MP photos; gateway overhead per search; thumbnails; ingest; recall
	preprocess/bench/run.sh
	$(GO) test -run '^$$' -bench Overhead -benchtime 3s ./app/
	@# Thumbnails per second per core (cache miss: read, decode, resize, JPEG encode).
	$(GO) test -run '^$$' -bench Thumbnail -benchtime 2s -cpu 1 ./thumbnail/
	SIDECAR_BENCH_IMAGES=512 $(GO) test -tags 'integration bench' -count=1 -run TestBulkThroughputVersusNative -v ./esproxy/sidecar/
	$(MAKE) --no-print-directory bench-ingest bench-recall

.PHONY: bench-ingest
bench-ingest: deps up build ## ingest img/s on 500+ real photos: plain Python pipeline vs `tusou ingest` vs single-file POST (c=1, c=8)
	PYTHON=$(PYTHON) bench/ingest/run.sh

.PHONY: bench-recall
bench-recall: deps up ## kNN recall@10 on 100k int8_hnsw vectors vs brute force, with and without rescore_vector
	PYTHON=$(PYTHON) bench/recall/run.sh

.PHONY: soak
soak: up build ## SOAK_DURATION (30m) of mixed REST + sidecar load on bin/tusou, Triton and Elasticsearch restarted twice each (SOAK_RESTARTS=0: not; they are shared); Markdown report
	$(GO) run ./bench/soak -duration $(SOAK_DURATION) -restarts=$(if $(filter 0 false,$(SOAK_RESTARTS)),false,true) $(SOAK_FLAGS)

SOAK_DURATION ?= 30m
SOAK_RESTARTS ?= 1

.PHONY: fuzz
fuzz: ## run every fuzz target (`func Fuzz...`, found anew each run) for FUZZTIME each (default 60s); `go test` runs their seed corpora
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

FUZZTIME ?= 60s

.PHONY: test-unit
test-unit: ## unit tests only (no stack needed)
	$(GO) test ./...

.PHONY: proto
proto: ## regenerate the Triton gRPC stubs
	scripts/gen-proto.sh

.PHONY: docs
docs: ## regenerate docs/configuration.md and config/fielddocs_gen.go
	$(GO) run ./config/internal/fielddocs/cmd
	$(GO) run ./cmd/tusou config reference > docs/configuration.md

.PHONY: clean
clean: ## remove build outputs (not the local stack's state: see `make down`)
	rm -rf bin

# --- fixtures and models (Python; not part of `make test`) -------------------
# The interpreter for the tooling venvs: $PYTHON, else the first Python 3.8-3.12
# on PATH (3.11 preferred: the versions PyTriton and the pinned wheels support).
PYTHON ?= $(shell for p in python3.11 python3.12 python3.10 python3.9 python3.8 python3; do \
  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not ((3,8) <= sys.version_info[:2] <= (3,12)))' 2>/dev/null && { command -v $$p; break; }; done)
need-python = @test -n "$(PYTHON)" || { echo "no Python 3.8-3.12 on PATH (python3.11 preferred): install one or set PYTHON=/path/to/python3.11" >&2; exit 1; }
FIXPY   := .local/venv-fixtures/bin/python

.PHONY: fixtures-venv
fixtures-venv:
	$(need-python)
	@test -x $(FIXPY) || $(PYTHON) -m venv .local/venv-fixtures
	@.local/venv-fixtures/bin/pip install -q -r model_repository/testdata/requirements.txt

.PHONY: fixtures
fixtures: fixtures-venv ## regenerate model_repository/testdata from the tiny models (~20 s)
	$(FIXPY) model_repository/testdata/generate.py

.PHONY: fixtures-check
fixtures-check: fixtures-venv ## verify the committed fixtures are current and reproducible
	$(FIXPY) model_repository/testdata/generate.py --check

.PHONY: tokenizer-tables
tokenizer-tables: fixtures-venv ## regenerate tokenizer/tables.go from the tokenizers library
	$(FIXPY) tokenizer/gen_tables.py

EXPORTPY := .local/venv-export/bin/python

.PHONY: export-venv
export-venv:
	$(need-python)
	@test -x $(EXPORTPY) || $(PYTHON) -m venv .local/venv-export
	@.local/venv-export/bin/pip install -q -r model_repository/export/requirements.txt

.PHONY: export-models
export-models: export-venv ## export the REAL CLIP models into model_repository/ (needs the Hugging Face hub)
	PYTHONPATH=model_repository/export $(EXPORTPY) -m tusou_export export

.PHONY: models-tiny
models-tiny: export-venv ## regenerate the tiny test models and tokenizer (deterministic)
	PYTHONPATH=model_repository/export $(EXPORTPY) -m tusou_export tiny

.PHONY: export-test
export-test: export-venv ## export tooling tests incl. a full-size random-init ViT-B/32 + multilingual DistilBERT export (~4 min, ~6 GB venv)
	cd model_repository/export && ../../$(EXPORTPY) -m pytest -q tests

SIDECARPY := .local/venv-sidecar/bin/python

.PHONY: sidecar-venv
sidecar-venv: ## venv for the sidecar's Python client tests (elasticsearch-py 8.19; run by the Go integration tests)
	$(need-python)
	@test -x $(SIDECARPY) || $(PYTHON) -m venv .local/venv-sidecar
	@.local/venv-sidecar/bin/pip install -q --disable-pip-version-check -r esproxy/sidecar/pytests/requirements.txt
