# Allezon: `make run` runs the whole platform on this machine (embedded
# backends, no Docker); `make test` runs every test, installing what it needs.

GO        ?= go
BIN       ?= bin/allezon
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
TEST_TIMEOUT ?= 20m

.PHONY: all build build-debug run test lint unit test-deps clean

# Images for the Swarm deployment (docs/deployment.md): built by Docker
# from the Dockerfile, tagged $(REGISTRY)/allezon:$(IMAGE_TAG). They need a
# Docker engine, so no test runs them; stack/2-build-push.sh builds and
# pushes both images for operators.
REGISTRY  ?= localhost:5000
IMAGE_TAG ?= $(VERSION)
DOCKER    ?= docker

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/allezon

# A debug build compares every query's answer with the expected answer in
# its body (docs/api.md "Debug builds").
build-debug:
	$(GO) build -trimpath -tags querydebug -ldflags '$(LDFLAGS)' -o $(BIN)-debug ./cmd/allezon

# The whole platform in one process on :8088, data in ./data.
run: build
	./$(BIN) all

# Every test: lint, unit and contract suites (PostgreSQL started by the
# tests themselves), end-to-end runs against the real binary.
test: test-deps lint unit deploy-check

# The fault tests (cmd/allezon/faults_test.go) send no queries, so a debug
# build would add nothing to them: they run in the first pass only.
FAULT_TESTS := ^(TestCrashRounds|TestGracefulShutdown|TestBrokerRestart|TestRebalance|TestBackendStall)$$

unit:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -tags querydebug -skip '$(FAULT_TESTS)' ./gateway/... ./cmd/...
	@if [ -z "$$ALLEZON_TEST_AEROSPIKE" ]; then \
	  echo "NOTE: the Aerospike contract suite of the profile store was NOT RUN (no server here);"; \
	  echo "      run it with ALLEZON_TEST_AEROSPIKE=host:port make test"; \
	else echo "Aerospike contract suite ran against $$ALLEZON_TEST_AEROSPIKE"; fi

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags querydebug ./gateway/...
	$(GO) vet -tags soak ./cmd/allezon/
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# PostgreSQL comes from Debian's packages; the tests start private clusters
# on loopback as the postgres user, so only the binaries are needed. The
# deployment checks need shellcheck and promtool (Debian's prometheus; its
# service is not started). The docker CLI must be there already.
test-deps:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	  echo "installing PostgreSQL (Debian packages) for the tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q postgresql; \
	fi
	@missing=; \
	  command -v shellcheck >/dev/null 2>&1 || missing="$$missing shellcheck"; \
	  command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing (Debian packages) for the deployment checks"; \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	  fi

clean:
	rm -rf bin

# Fuzzing: every Fuzz function in the repository's _test.go files, found by
# grep (so a new one cannot be left out), for FUZZTIME each, one after the
# other, with FUZZPARALLEL workers. The seed corpora (f.Add and
# testdata/fuzz/) also run in every `make test`. A target that does not run
# (a build tag hides it) fails the rule. fuzz-ci is the short run of CI.
FUZZTIME     ?= 60s
FUZZPARALLEL ?= 2
.PHONY: fuzz fuzz-ci
fuzz:
	@targets=$$(git ls-files -co --exclude-standard -- '*_test.go' | grep -v '/testdata/' | sed 's#^#./#' | \
	    xargs grep -Ho '^func Fuzz[A-Za-z0-9_]*' | sed -E 's#^(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]*)$$#\1:\2#' | sort -u); \
	  [ -n "$$targets" ] || { echo "fuzz: no Fuzz functions found"; exit 1; }; \
	  log=$$(mktemp) && trap 'rm -f "$$log"' EXIT && \
	  for t in $$targets; do \
	    pkg=$${t%%:*}; name=$${t##*:}; \
	    echo "== fuzz $$name ($$pkg) for $(FUZZTIME)"; \
	    { $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -parallel $(FUZZPARALLEL) $$pkg 2>&1; echo "exit $$?"; } | tee "$$log"; \
	    tail -n 1 "$$log" | grep -qx 'exit 0' || { echo "fuzz: $$name ($$pkg) FAILED"; exit 1; }; \
	    if grep -q 'no fuzz tests to fuzz' "$$log"; then echo "fuzz: $$name ($$pkg) did not run (build tags?)"; exit 1; fi; \
	  done; \
	  echo "fuzz: all $$(echo $$targets | wc -w) targets passed ($(FUZZTIME) each)"

fuzz-ci:
	$(MAKE) --no-print-directory fuzz FUZZTIME=3s

# The one image of every component: a static allezon (CGO_ENABLED=0) on a
# pinned Alpine, non-root. image-debug is the -tags querydebug build.
.PHONY: image image-debug image-patroni image-push
image:
	$(DOCKER) build --build-arg VERSION=$(IMAGE_TAG) -t $(REGISTRY)/allezon:$(IMAGE_TAG) .

image-debug:
	$(DOCKER) build --build-arg VERSION=$(IMAGE_TAG)-debug --build-arg TAGS=querydebug -t $(REGISTRY)/allezon:$(IMAGE_TAG)-debug .

# PostgreSQL 15 under Patroni (services/patroni/), for 1.docker-compose.yaml.
image-patroni:
	$(DOCKER) build -t $(REGISTRY)/allezon-patroni:$(IMAGE_TAG) services/patroni

image-push: image image-patroni
	$(DOCKER) push $(REGISTRY)/allezon:$(IMAGE_TAG)
	$(DOCKER) push $(REGISTRY)/allezon-patroni:$(IMAGE_TAG)

# Deployment checks that are not Go tests (the invariants of the stack
# files and the dashboard's metrics are, in ./stack, run by `unit`): Docker
# accepts both stack files (the docker CLI alone, no engine), promtool
# accepts the Prometheus config, shellcheck the operator scripts.
.PHONY: deploy-check
deploy-check:
	@command -v docker >/dev/null 2>&1 || { echo "deploy-check: FAIL: the docker CLI is not installed; 'docker stack config' checks the stack files (no engine needed)"; exit 1; }
	@for f in 1.docker-compose.yaml 2.docker-compose.yaml; do \
	  echo "docker stack config -c $$f"; \
	  ALLEZON_REGISTRY=registry.example:5000 ALLEZON_VERSION=check docker stack config -c $$f >/dev/null || exit 1; \
	done
	promtool check config services/prometheus/prometheus.yml
	promtool check rules services/prometheus/alerts.yml
	cd services/prometheus && promtool test rules alerts_test.yml
	shellcheck stack/*.sh services/kafka/*.sh services/patroni/*.sh
	@echo "deploy-check: stack files, Prometheus config and alert rules, scripts OK"

# A real Patroni cluster on loopback (services/patroni/patronitest): etcd,
# two Patroni nodes (PostgreSQL 15) and HAProxy from Debian's packages; the
# leader crashes in the middle of a replay through broker, gateway and
# pipeline, and the aggregates must come out exact. Runs as root (etcd and
# Patroni are started as the users etcd and postgres); about 2 minutes.
.PHONY: test-patroni
test-patroni:
	@missing=; \
	  command -v patroni >/dev/null 2>&1 || missing="$$missing patroni"; \
	  command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	  command -v etcdctl >/dev/null 2>&1 || missing="$$missing etcd-client"; \
	  { command -v haproxy || [ -x /usr/sbin/haproxy ]; } >/dev/null 2>&1 || missing="$$missing haproxy"; \
	  [ -x /usr/lib/postgresql/15/bin/postgres ] || missing="$$missing postgresql"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing (Debian packages) for the Patroni test"; \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	  fi
	@if [ "$$(id -u)" = 0 ]; then \
	  echo "$(GO) test -tags patroni -count=1 -timeout 15m -v ./services/patroni/patronitest/"; \
	  $(GO) test -tags patroni -count=1 -timeout 15m -v ./services/patroni/patronitest/; \
	else \
	  echo "not root: building the test and allezon, running the test under sudo"; \
	  d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && \
	  $(GO) build -o "$$d/allezon" ./cmd/allezon && \
	  $(GO) test -tags patroni -c -o "$$d/patronitest.test" ./services/patroni/patronitest/ && \
	  (cd services/patroni/patronitest && sudo env ALLEZON_TEST_BINARY="$$d/allezon" "$$d/patronitest.test" -test.count=1 -test.timeout=15m -test.v); \
	fi

# Benchmarks (bench/): the scenarios one after another on this machine,
# about 10 minutes, then BENCHMARKS.md and bench/results/ from the run.
# Run them on a quiet machine (the report warns when it was not). Quick
# check of the harness: make bench BENCH_FLAGS='--quick --out /tmp/B.md --results /tmp/bench'
.PHONY: bench bench-full soak
BENCH_FLAGS ?=

bench:
	$(GO) run ./bench --ldflags '$(LDFLAGS)' --out BENCHMARKS.md --results bench/results $(BENCH_FLAGS)

# 30 minutes of allezon all at 5,000 tags/s with SPEC's query mix: fails on
# any error or mismatch, or when memory or goroutines grow after the
# warm-up; writes bench/results/soak.png, soak-memory.png and soak.json.
# ALLEZON_SOAK_DURATION and ALLEZON_SOAK_RATE change the defaults.
soak:
	$(GO) test -count=1 -tags soak -run '^TestSoak$$' -timeout 60m -v ./cmd/allezon/

# The same, plus aggregates at full retention: bench/fullretention's
# benchfull test, when present (hours at its defaults; ALLEZON_BENCH_* size it).
bench-full:
	$(GO) run ./bench --ldflags '$(LDFLAGS)' --out BENCHMARKS.md --results bench/results --full $(BENCH_FLAGS)
