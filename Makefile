# ocm-jobs — the two commands are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
# Real servers are built once into a cache outside the work tree, keyed by version.
OCM_JOBS_TOOLS ?= $(HOME)/.cache/ocm-jobs
export OCM_JOBS_TOOLS
export GOFLAGS ?= -buildvcs=false
BENCHTIME ?= 1x
FUZZTIME ?= 60s

.PHONY: all tools test unit integration bench fuzz run demo build vet clean image chaos

all: build

## tools: build or install kube-apiserver, kubectl, etcd, redis-server, the OCM work agent and versitygw,
## and Knative Eventing's components (tests/eventing runs them against the hub)
tools:
	bash tests/tools/install.sh all knative

build:
	$(GO) build ./...

vet:
	$(GO) vet ./...

## test: the fast unit tests, then the integration suites, all against real servers
test: tools image vet unit integration

## image: the one image of the four functions, built by Knative's func CLI with its host builder
## (no Docker) as an OCI layout at .func/image; tests/packaging checks and runs it
image:
	bash tests/tools/install.sh func
	bash tests/tools/image.sh

# Unit tests: every package outside tests/ (those that keep state use a real redis-server).
unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v '/tests/')

# Integration suites: real kube-apiserver + OCM CRDs, real work agents, real Redis.
integration:
	$(GO) test -count=1 -timeout 40m -p 1 ./tests/...

## chaos: the fault-injection run (tests/chaos) with SEED, GROUPS and DURATION; `go test ./tests/chaos`
## alone (part of `make integration`) runs a short fixed seed. `env` passes GROUPS, which bash
## would not export. The report ends with `chaos: seed=N groups=N faults=N violations=N`.
SEED ?= $(shell date +%s)
GROUPS ?= 200
DURATION ?= 3m
chaos: tools
	env SEED=$(SEED) GROUPS=$(GROUPS) DURATION=$(DURATION) $(GO) test -count=1 -v -run '^TestChaos$$' -timeout 120m ./tests/chaos

## bench: benchmarks against real servers, figures printed (and the asynq peer in its own module)
bench: tools
	$(GO) test -count=1 -run '^$$' -bench . -benchtime $(BENCHTIME) -timeout 60m $$($(GO) list ./... )
	cd tests/benchpeer && $(GO) test -count=1 -run '^$$' -bench . -benchtime $(BENCHTIME) -timeout 30m ./...

## fuzz: each fuzz target for FUZZTIME
fuzz:
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$t/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$t $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$t || exit 1; \
	  done; \
	done

## run: the whole system on loopback, in the foreground (Ctrl-C stops everything)
run: tools
	@mkdir -p .run/bin
	$(GO) build -o .run/bin/localstack ./tests/localstack
	exec .run/bin/localstack

## demo: submit the bundled example application to a running `make run` and follow its jobs
demo:
	@mkdir -p .run/bin
	$(GO) build -o .run/bin/demo ./tests/localstack/demo
	.run/bin/demo

clean:
	rm -rf .run .func
