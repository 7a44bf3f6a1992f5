# nixpi — see README.md. `make demo` runs the main job on a built-in base,
# `make test` runs every test (unit, loop-device, QEMU end to end).
SHELL := /bin/bash
GO ?= go
# Reproducible binaries: no paths, no VCS stamp, no build id.
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags='-s -w -buildid='
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
	GOOS=linux GOARCH=arm64 $(GOBUILD) -o $@ ./cmd/nixpi-firstboot
assets/device/nixpi-firstboot-linux-arm:
	GOOS=linux GOARCH=arm GOARM=7 $(GOBUILD) -o $@ ./cmd/nixpi-firstboot

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

# Build time against `xz -T0 -dc` of the same >= 1 GiB base, and peak RSS,
# from one run (the base is generated once and cached in /var/tmp/nixpi-bench);
# and the time of the disk blank check on a sparse 2 TiB loop device (root).
bench: build deps-test
	$(GO) test -run '^$$' -bench . -benchtime 1x ./builder/fatfs/ ./builder/fixture/
	$(GO) test -run '^$$' -bench BlankCheck -benchtime 1x ./firstboot/disk/
	NIXPI_BIN=$(CURDIR)/bin/nixpi $(GO) run ./builder/bench -runs 3

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
