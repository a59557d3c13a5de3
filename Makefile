# Allezon: `make run` runs the whole platform on this machine (embedded
# backends, no Docker); `make test` runs every test, installing what it needs.

GO        ?= go
BIN       ?= bin/allezon
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
TEST_TIMEOUT ?= 20m

.PHONY: all build build-debug run test lint unit test-deps clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/allezon

# A debug build compares every query's answer with the expected answer in
# its body (SPEC "Debug builds").
build-debug:
	$(GO) build -trimpath -tags querydebug -ldflags '$(LDFLAGS)' -o $(BIN)-debug ./cmd/allezon

# The whole platform in one process on :8088, data in ./data.
run: build
	./$(BIN) all

# Every test: lint, unit and contract suites (PostgreSQL started by the
# tests themselves), end-to-end runs against the real binary.
test: test-deps lint unit

unit:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -tags querydebug ./gateway/... ./cmd/...
	@if [ -z "$$ALLEZON_TEST_AEROSPIKE" ]; then \
	  echo "NOTE: the Aerospike contract suite of the profile store was NOT RUN (no server here);"; \
	  echo "      run it with ALLEZON_TEST_AEROSPIKE=host:port make test"; \
	else echo "Aerospike contract suite ran against $$ALLEZON_TEST_AEROSPIKE"; fi

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags querydebug ./gateway/...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# PostgreSQL comes from Debian's packages; the tests start private clusters
# on loopback as the postgres user, so only the binaries are needed.
test-deps:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	  echo "installing PostgreSQL (Debian packages) for the tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q postgresql; \
	fi

clean:
	rm -rf bin

# Benchmarks (bench/): the scenarios one after another on this machine,
# about 10 minutes, then BENCHMARKS.md and bench/results/ from the run.
# Run them on a quiet machine (the report warns when it was not). Quick
# check of the harness: make bench BENCH_FLAGS='--quick --out /tmp/B.md --results /tmp/bench'
.PHONY: bench bench-full
BENCH_FLAGS ?=

bench:
	$(GO) run ./bench --ldflags '$(LDFLAGS)' --out BENCHMARKS.md --results bench/results $(BENCH_FLAGS)

# The same, plus aggregates at full retention: bench/fullretention's
# benchfull test, when present (hours at its defaults; ALLEZON_BENCH_* size it).
bench-full:
	$(GO) run ./bench --ldflags '$(LDFLAGS)' --out BENCHMARKS.md --results bench/results --full $(BENCH_FLAGS)
