# tusou — run `make help` for the targets. A new user needs only `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Every build, vet and test compiles with -trimpath, like the release image does, so
# they all share one build cache (a cold cache is most of CI's time).
export GOFLAGS ?= -trimpath
# Integration tests share one Elasticsearch and one Triton: run packages one at a time.
ITEST_FLAGS ?= -count=1 -p 1 -timeout 20m

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install missing system packages (Debian; idempotent)
	@deploy/local/deps.sh

.PHONY: build
build: deps ## build bin/tusou (cgo: libjpeg-turbo)
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/tusou ./cmd/tusou

.PHONY: up
up: deps ## start the local stack: Elasticsearch :9200 and Triton :8000/:8001/:8002 (idempotent)
	@deploy/local/stack.sh up

.PHONY: down
down: ## stop exactly what `make up` started
	@deploy/local/stack.sh down

.PHONY: status
status: ## show the local stack's state
	@deploy/local/stack.sh status

.PHONY: run
run: up build ## start the stack, then the gateway in the foreground on :8080
	bin/tusou serve --set log.format=console

.PHONY: test
test: deps up build sidecar-venv ## everything CI runs: checks, unit tests, integration tests on the real stack
	$(MAKE) --no-print-directory check
	@# One run covers both tiers: the integration tag adds the real-stack tests to the unit tests.
	TUSOU_E2E_BIN=$(CURDIR)/bin/tusou $(GO) test -tags integration $(ITEST_FLAGS) ./...
	cd k8s && $(GO) test -count=1 -timeout 30m ./...
	@echo "make test: all passed"

.PHONY: check
check: ## static checks: gofmt, go vet, generated code and docs in sync
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet -tags integration ./...   # the tag adds the integration tests to every package
	CGO_ENABLED=0 $(GO) vet ./preprocess/   # the pure-Go fallback keeps building
	scripts/check-proto-drift.sh

.PHONY: bench
bench: deps up ## benchmarks (slow, not in CI): preprocessing vs Pillow on real 1-12 MP photos; gateway overhead per search
	preprocess/bench/run.sh
	$(GO) test -run '^$$' -bench Overhead -benchtime 3s ./app/
	SIDECAR_BENCH_IMAGES=512 $(GO) test -tags integration -count=1 -run TestBulkThroughputVersusNative -v ./esproxy/sidecar/

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
PY311   := /root/.pyenv/versions/3.11.7/bin/python
FIXPY   := .local/venv-fixtures/bin/python

.PHONY: fixtures-venv
fixtures-venv:
	@test -x $(FIXPY) || $${PYTHON:-$(PY311)} -m venv .local/venv-fixtures
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
	@test -x $(EXPORTPY) || $${PYTHON:-$(PY311)} -m venv .local/venv-export
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
	@test -x $(SIDECARPY) || $${PYTHON:-$(PY311)} -m venv .local/venv-sidecar
	@.local/venv-sidecar/bin/pip install -q --disable-pip-version-check -r esproxy/sidecar/pytests/requirements.txt
