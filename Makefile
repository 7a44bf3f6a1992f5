# nixpi — see README.md. `make demo` runs the main job on a built-in base,
# `make test` runs every test (unit, loop-device, QEMU end to end).
SHELL := /bin/bash
GO ?= go
# Reproducible binaries: no paths, no VCS stamp, no build id.
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags='-s -w -buildid='
# The device binaries cmd/nixpi embeds, from the tree in the current directory.
BUILD_DEVICE_ARM64 := GOOS=linux GOARCH=arm64 $(GOBUILD) -o assets/device/nixpi-firstboot-linux-arm64 ./cmd/nixpi-firstboot
BUILD_DEVICE_ARM := GOOS=linux GOARCH=arm GOARM=7 $(GOBUILD) -o assets/device/nixpi-firstboot-linux-arm ./cmd/nixpi-firstboot
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
OUT ?= out

# Debian packages: what `make demo` needs, and what the tests need on top.
DEMO_PACKAGES := e2fsprogs dosfstools mtools fdisk util-linux xz-utils
TEST_PACKAGES := $(DEMO_PACKAGES) gdisk btrfs-progs exfatprogs zstd gzip zip unzip python3 \
	qemu-user-static qemu-system-arm binfmt-support mmdebstrap arch-test debian-archive-keyring \
	nix-bin busybox-static cryptsetup-bin zsh fish bmap-tools dmsetup git

DEVICE_BINS := assets/device/nixpi-firstboot-linux-arm64 assets/device/nixpi-firstboot-linux-arm

.PHONY: all build device deps-demo deps-test demo fixture test unit race e2e bench fuzz lint clean
all: build

device: $(DEVICE_BINS)
# Always rebuilt (go's cache makes it cheap) so the embedded binaries match the source.
.PHONY: $(DEVICE_BINS)
assets/device/nixpi-firstboot-linux-arm64:
	$(BUILD_DEVICE_ARM64)
assets/device/nixpi-firstboot-linux-arm:
	$(BUILD_DEVICE_ARM)

build: device
	$(GOBUILD) -o bin/nixpi ./cmd/nixpi
	$(GOBUILD) -o bin/nixpi-fixture ./cmd/nixpi-fixture

# Installs missing Debian packages when root; otherwise prints the apt-get line.
deps-demo:
	@./.ci/deps $(DEMO_PACKAGES)
deps-test:
	@./.ci/deps $(TEST_PACKAGES)

fixture: build deps-demo
	@mkdir -p $(OUT)
	bin/nixpi-fixture --layout trixie --arch arm64 --out $(OUT)/base-trixie-arm64.img

# The main job on the built-in default base: a Raspberry Pi OS (Trixie, arm64)
# shaped image generated in seconds, the example config, then inspect.
demo: fixture
	bin/nixpi config init > $(OUT)/nixpi.toml
	bin/nixpi config check $(OUT)/nixpi.toml
	bin/nixpi build --base $(OUT)/base-trixie-arm64.img --config $(OUT)/nixpi.toml --out $(OUT)/nixpi-card.img --force
	bin/nixpi inspect $(OUT)/nixpi-card.img

# Every test: lint first (it takes seconds), unit and loop-device tests (root),
# then the QEMU end-to-end run.
test: deps-test lint unit race e2e

# NIXPI_REQUIRE_NIX: the generated NixOS configurations must be parsed and
# evaluated by a real nix-instantiate (nix-bin), not skipped.
unit:
	$(GO) vet ./...
	NIXPI_REQUIRE_NIX=1 $(GO) test -count=1 -timeout 30m ./...

# The race detector over the packages that run goroutines: the build's
# decoder, hasher, writeback ticker and early card; flash's writer, reader
# and read-back hashers; the service's engine, consoles, LED and status page.
RACE_PACKAGES := ./builder/ ./builder/flash/ ./builder/source/... ./firstboot/engine/ ./firstboot/progress/ \
	./firstboot/statuspage/ ./firstboot/network/
race:
	$(GO) test -race -count=1 -timeout 30m $(RACE_PACKAGES)

e2e: build deps-test
	NIXPI_E2E=1 NIXPI_BIN=$(CURDIR)/bin/nixpi $(GO) test -count=1 -v -timeout 100m -run 'TestE2E' ./builder/qemu/

# The build `make bench` holds bin/nixpi to: a98e3fc, the last main before
# issue 21's refactors (the binary the issue measured as today's), pinned so
# that every run compares with the same code; move it when a release is cut.
# It is built with GOBUILD, as `make build` builds, in a temporary directory
# from `git archive`, which leaves the work tree and the index alone.
# BENCH_BASELINE= times bin/nixpi alone.
BENCH_BASELINE ?= a98e3fc026509318a1c0d846ab5232d894e176f2
# Runs; with a baseline, pairs, and the guard decides on their median.
BENCH_RUNS ?= 4

# Build time against `xz -T0 -dc` of the same >= 1 GiB base, and peak RSS,
# from one run (the base is generated once and cached in /var/tmp/nixpi-bench),
# each run a pair with the baseline's build: exit 1 when bin/nixpi's median
# is over 1.10x the baseline's; and the time of the disk blank check on a
# sparse 2 TiB loop device (root).
bench: build deps-test
	$(GO) test -run '^$$' -bench . -benchtime 1x ./builder/fatfs/ ./builder/fixture/
	$(GO) test -run '^$$' -bench BlankCheck -benchtime 1x ./firstboot/disk/
ifeq ($(BENCH_BASELINE),)
	NIXPI_BIN=$(CURDIR)/bin/nixpi $(GO) run ./builder/bench -runs $(BENCH_RUNS)
else
	@set -e; \
	commit=$$(git rev-parse --verify --quiet '$(BENCH_BASELINE)^{commit}') || \
		{ echo "bench: BENCH_BASELINE=$(BENCH_BASELINE) names no commit here: fetch it, name another (BENCH_BASELINE=main~5), or set BENCH_BASELINE= to time bin/nixpi alone"; exit 1; }; \
	tmp=$$(mktemp -d /tmp/nixpi-baseline.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	echo "bench: baseline $$commit, built in $$tmp"; \
	git archive "$$commit" | tar -x -C "$$tmp"; \
	(cd "$$tmp" && $(BUILD_DEVICE_ARM64) && $(BUILD_DEVICE_ARM) && $(GOBUILD) -o bin/nixpi ./cmd/nixpi); \
	NIXPI_BIN=$(CURDIR)/bin/nixpi $(GO) run ./builder/bench -runs $(BENCH_RUNS) -baseline "$$tmp/bin/nixpi"
endif

# Every fuzz target for FUZZTIME with one worker: executions per second per
# target, and the inputs found kept in testdata/fuzz (the default `go test`
# runs them, with each target's seeds, as a smoke test).
FUZZTIME ?= 30s
fuzz:
	GO=$(GO) ./.ci/fuzz $(FUZZTIME)

# gofmt over the files git tracks (git is in TEST_PACKAGES), go vet, and
# staticcheck at a pinned version, which `go run` fetches through the Go
# module proxy: nothing to install by hand.
lint:
	@files=$$(git ls-files '*.go') && test -n "$$files" || { echo "lint: no Go files from git ls-files (not a git checkout?)"; exit 1; }; \
	unformatted=$$(gofmt -l $$files); test -z "$$unformatted" || { echo "$$unformatted"; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf bin $(OUT) $(DEVICE_BINS)
