# Switchyard build, test and tooling. See README.md.
GO        ?= go
BIN       := bin/switchyard
PKGS      := ./...
PROTOC_GEN_GO_VERSION := v1.36.12

.PHONY: all build install run test test-unit vet fmt generate bench fuzz clean tools chaos chaos-short

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/switchyard

## install: put switchyard on the PATH ($$(go env GOPATH)/bin, or $$GOBIN).
install:
	$(GO) install -trimpath ./cmd/switchyard

## run: a dev cluster (3 allocator nodes) on loopback with embedded defaults.
run: build
	./$(BIN) dev

## test: everything CI runs (vet, gofmt check, unit + multi-node tests, short fuzz, chaos-short).
test: vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	$(MAKE) fuzz FUZZTIME=3s
	$(MAKE) chaos-short

## chaos-short: the chaos suite's short campaign (≤ 3 min; part of test):
## real agent processes (and network namespaces / Docker containers when
## usable; required under CI=true) under kills, pauses, partitions and netem,
## with every invariant checked. Summaries go to $(CHAOS_OUT)/*/summary.json.
CHAOS_OUT      ?= /tmp/switchyard-chaos
chaos-short:
	SWITCHYARD_CHAOS=short CHAOS_OUT=$(CHAOS_OUT) $(GO) test -count=1 -timeout 6m -v -run '^TestChaos' ./chaos/

## chaos: the full campaign (default ~10 min): ≥ 50 leader kills after a 60 s
## fault-free phase at full load (failover and spurious-election figures),
## then every nemesis on 5-node clusters. Tune with CHAOS_DURATION (nemesis
## phase per scenario), CHAOS_STEADY and CHAOS_KILLS.
CHAOS_DURATION ?= 60s
CHAOS_STEADY   ?= 60s
CHAOS_KILLS    ?= 50
chaos:
	SWITCHYARD_CHAOS=full CHAOS_OUT=$(CHAOS_OUT) CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_STEADY=$(CHAOS_STEADY) CHAOS_KILLS=$(CHAOS_KILLS) \
	  $(GO) test -count=1 -timeout 60m -v -run '^TestChaos' ./chaos/

## fuzz: run every fuzz target (decoders of network input) for FUZZTIME each.
## Seed corpora live in <pkg>/testdata/fuzz/<Target>/.
FUZZTIME ?= 60s
FUZZ_TARGETS := ./transport:FuzzDecodeDatagram ./transport:FuzzReadFrame ./transport:FuzzEncodeReport ./fsm:FuzzApply ./fsm:FuzzReadState ./media:FuzzCheckOffer ./acl:FuzzParseBearer ./mediatoken:FuzzVerify
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	 if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

## generate: regenerate protobuf code (needs protoc; installs protoc-gen-go).
generate:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler"; exit 1; }
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	PATH=$(CURDIR)/bin:$$PATH protoc -I proto --go_out=. --go_opt=module=github.com/switchyard/switchyard proto/switchyard/v1/*.proto

## bench: throughput/latency and failover figures (see README "Benchmarks").
bench:
	$(GO) test -run '^$$' -bench 'Allocate' -benchtime 1x -count 3 -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'RequestPath' -benchtime 1x -count 3 -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'FailoverSIGKILL' -benchtime 12x -count 3 -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench '^Benchmark(Pick|Herding)$$' -benchtime 3x -count 3 -timeout 30m ./cluster/... ./placement/...
	$(GO) test -run '^$$' -bench 'IndexPick' -benchtime 20000x -timeout 10m ./placement/
	$(GO) test -run '^$$' -bench 'Simulate100k' -benchtime 1x -timeout 10m ./placement/sim/
	$(GO) test -run '^$$' -bench 'LeaderScale|MemoryPerServer' -benchtime 1x -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'APIScale' -benchtime 1x -count 3 -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'SnapshotAtScale' -benchtime 1x -count 3 -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'ReportCPU' -benchtime 1x -count 3 -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'SidecarCPU' -benchtime 1x -count 3 -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'ScaleOut|CascadeHop' -benchtime 200x -count 3 -timeout 30m ./media/
	$(GO) test -run '^$$' -bench 'Ingest' -benchtime 100000x -count 3 -timeout 30m ./quicapi/
	$(GO) test -run '^$$' -bench 'BytesPerReport' -benchtime 2000x -count 3 ./quicapi/
	$(GO) test -run '^$$' -bench 'ReportToLeaderView' -benchtime 200x -count 3 ./quicapi/
	$(GO) test -run '^$$' -bench 'RoomPlacement' -benchtime 1x -count 3 ./httpapi/
	$(GO) test -run '^$$' -bench 'WatchHubStep' -benchtime 3x -count 3 -timeout 10m ./httpapi/
	$(GO) test -run '^$$' -bench 'RawUDPReceive' -benchtime 1s -count 3 ./quicapi/
	$(GO) test -run '^$$' -bench 'TenThousandServers' -benchtime 1x -count 3 -timeout 30m ./quicapi/

clean:
	rm -rf bin

## image: the container image ($(IMAGE)): the static binary on an empty
## image (Dockerfile), built without any registry (classic builder, FROM
## scratch). deploy/compose and deploy/k8s run it.
.PHONY: image
IMAGE ?= switchyard:latest
image:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/image/switchyard ./cmd/switchyard
	DOCKER_BUILDKIT=0 docker build -q -f Dockerfile -t $(IMAGE) bin/image

## test-livekit: the LiveKit sidecar test alone (builds livekit-server once, ~5 min;
## make test runs it too once the binary is built, and CI builds it in its setup).
test-livekit:
	bash .ci/build-livekit.sh
	SWITCHYARD_LIVEKIT=1 $(GO) test -race -count=1 -run LiveKit -v ./sidecar/
