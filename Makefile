# pkgfleet: `make run` starts a local fleet, `make test` checks everything.
GO      ?= go
BIN     := bin
GOFLAGS ?=

.PHONY: all build run test vet lint deps bench bench-sandbox chart-test clean settings images test-containers test-cluster

all: build

build:
	$(GO) build -o $(BIN)/pkgfleet-api ./cmd/api
	$(GO) build -o $(BIN)/pkgfleet-worker ./cmd/worker
	$(GO) build -o $(BIN)/pkgfleet ./cmd/pkgfleet

deps:
	bash scripts/deps.sh --tests

run:
	bash scripts/run.sh

# Installs missing tools, then every check in phases, one line each with
# its time (scripts/test.sh lists them; PKGFLEET_TEST_PHASES picks some).
test:
	bash scripts/test.sh

vet:
	$(GO) vet ./...

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) vet -tags containers ./internal/containertest/
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags containers ./internal/containertest/
	$(GO) vet -tags cluster ./internal/clustertest/
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags cluster ./internal/clustertest/

# pkgfleet-api:local, pkgfleet-worker:local and pkgfleet-redis:local from
# docker/, with a local Docker Engine and no registry (scripts/images.sh).
images:
	bash scripts/images.sh

# The images, the compose stack and the worker container under each runtime
# setting (internal/containertest); make test runs it too.
test-containers:
	bash scripts/test-containers.sh

# The Helm chart on a single-node Kubernetes of its own (scripts/test-cluster.sh,
# internal/clustertest; root); make test runs it too.
test-cluster:
	bash scripts/test-cluster.sh

bench-sandbox:
	bash scripts/bench-sandbox.sh

bench:
	bash scripts/bench.sh

chart-test:
	bash scripts/chart-test.sh

# Rewrites the README's settings table from the one declaration.
settings:
	$(GO) test ./internal/config -run README -update

clean:
	rm -rf $(BIN) var
