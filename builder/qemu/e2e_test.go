package qemu

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/steps"
)

// TestE2E builds a card from the Debian-made base image (trixie, with
// Debian's Nix) and boots it in qemu-system-aarch64 through every scenario:
// the hook boot, an uninterrupted install of NixOS onto the SSD with the real
// Nix in the guest and the stand-in nixpkgs served by the host, then the
// installed SSD booted as the Pi's firmware and U-Boot would once the card
// is retired, power cuts inside the partition, format and install steps,
// and the refusal of a disk with data. It takes many minutes, so it only
// runs when asked: `make e2e` (NIXPI_E2E=1, as root).
func TestE2E(t *testing.T) {
	if os.Getenv("NIXPI_E2E") != "1" {
		t.Skip("end-to-end QEMU test not requested: run `make e2e` (sets NIXPI_E2E=1; needs root, qemu-system-arm, mmdebstrap, qemu-user-static; 20+ minutes)")
	}
	if os.Geteuid() != 0 {
		t.Skip("end-to-end QEMU test needs root (loop devices, mounting the SSD's btrfs, building the base image with mmdebstrap)")
	}
	ctx := context.Background()
	if deadline, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-30*time.Second))
		defer cancel()
	}
	dir := os.Getenv("NIXPI_E2E_DIR") // keep consoles and disks for CI artifacts
	if dir == "" {
		dir = t.TempDir()
	}
	cacheDir := os.Getenv("NIXPI_CACHE_DIR")
	if cacheDir == "" {
		cacheDir = "/var/cache/nixpi"
	}
	logf := func(format string, args ...any) { t.Logf(format, args...) }

	var e *E2E
	defer func() {
		if e != nil {
			t.Logf("phase durations:\n%s", e.Summary())
		}
	}()
	binPath := filepath.Join(dir, "nixpi-firstboot-linux-arm64")
	device := func(goarch string) ([]byte, error) {
		return BuildDeviceBinary(ctx, "../..", goarch, binPath+"-"+goarch)
	}
	e, err := Prepare(ctx, Options{
		// NIXPI_E2E_BASE: a prebuilt base image instead of the cached one.
		Base:   os.Getenv("NIXPI_E2E_BASE"),
		Mirror: os.Getenv("NIXPI_DEBIAN_MIRROR"),
		// Raspberry Pi's bootloader images (real ones, ../shared/testdata),
		// which Raspberry Pi OS's rpi-eeprom package would install.
		Bootloader: "../../../shared/testdata/rpi-eeprom",
		CacheDir:   cacheDir, Config: "../../testdata/e2e/nixpi.toml", Dir: dir,
		StandIn:      "../../testdata/e2e/standin-nixpkgs",
		DeviceBinary: device, Log: logf,
		CommandLog: func(line string) { appendLine(filepath.Join(dir, "commands.log"), line) },
		MemoryMiB:  memoryMiB(t),
	})
	if e != nil { // Prepare returns what it made even when it fails
		defer e.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps.All() {
		e.WantSteps = append(e.WantSteps, s.Name())
	}
	e.Bystander = true

	var hb *HookBoot
	err = e.Phase("hook boot", func() error {
		var err error
		hb, err = e.RunHookBoot(ctx, e.Card)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := e.CheckHookBoot(ctx, hb, e.Inspector.RootFiles); len(p) > 0 {
		report(t, p)
		t.FailNow()
	}

	reference := &Reference{}
	if listed(skipUninterrupted) {
		for _, s := range []string{"trial", "partition", "format", "install"} {
			if listed(s) {
				t.Fatalf("NIXPI_E2E_ONLY=%s: %s starts from or compares with the uninterrupted install; drop %s", os.Getenv("NIXPI_E2E_ONLY"), s, skipUninterrupted)
			}
		}
		t.Logf("uninterrupted: %s in NIXPI_E2E_ONLY, skipped", skipUninterrupted)
	} else {
		var p Problems
		reference, p, err = e.Uninterrupted(ctx, hb.Card)
		report(t, p)
		if err != nil {
			t.Fatal(err)
		}
	}
	if wanted("mbr") {
		// The layout the main config does not cover, from a minimal config
		// (no [nixos] table): MBR, ext4 root, no swap.
		p, err := e.OtherConfig(ctx, "mbr", hb.Card, "../../testdata/e2e/nixpi-mbr.toml")
		report(t, p)
		if err != nil {
			t.Error(err)
		}
	} else {
		t.Logf("mbr: not in NIXPI_E2E_ONLY, skipped")
	}
	if wanted("trial") {
		// The trial boot that fails: U-Boot finds no extlinux.conf on the
		// SSD (an enclosure it cannot read looks the same), and a power cut
		// in the middle of the trial boot. Both start where the card asked
		// for the trial.
		for _, tc := range []struct {
			name   string
			break_ func(string) error
			cut    *Cut
		}{
			{"trial-fails", e.BreakExtlinux(ctx), nil},
			{"trial-power-cut", nil, &Cut{Source: SourceTryboot, At: "stand-in NixOS stage 1"}},
		} {
			p, err := e.TrialNotConfirmed(ctx, tc.name, reference.Trial, tc.break_, tc.cut)
			report(t, p)
			if err != nil {
				t.Error(err)
			}
		}
	} else {
		t.Logf("trial scenarios: not in NIXPI_E2E_ONLY, skipped")
	}
	// One install, cut in each of these steps in turn.
	var cuts []*Cut
	for _, cut := range []*Cut{
		// While sgdisk writes the new table (wipefs already ran).
		{Step: "partition", At: "run: /usr/sbin/sgdisk --clear"},
		// While mkfs.btrfs runs, after the FAT and the swap were made.
		{Step: "format", At: "run: /usr/sbin/mkfs.btrfs"},
		// While nix copy fills the SSD's store, before any profile.
		{Step: "install", At: "copy --no-check-sigs"},
	} {
		if !wanted(cut.Step) {
			t.Logf("power cut in %s: not in NIXPI_E2E_ONLY, skipped", cut.Step)
			continue
		}
		cuts = append(cuts, cut)
	}
	if len(cuts) > 0 {
		p, err := e.PowerCuts(ctx, hb.Card, cuts, reference)
		report(t, p)
		if err != nil {
			t.Error(err)
		}
	}
	if !wanted("refusal") {
		t.Logf("refusal: not in NIXPI_E2E_ONLY, skipped")
		return
	}
	p, err := e.Refusal(ctx, hb.Card)
	report(t, p)
	if err != nil {
		t.Error(err)
	}
}

// wanted says whether a scenario runs: all of them, unless NIXPI_E2E_ONLY
// lists some (trial, partition, format, install, refusal, mbr) to shorten a
// run while working on one. The hook boot always runs, and so does the
// uninterrupted install unless the list also has skipUninterrupted.
func wanted(scenario string) bool {
	return os.Getenv("NIXPI_E2E_ONLY") == "" || listed(scenario)
}

// listed says whether NIXPI_E2E_ONLY names it.
func listed(name string) bool {
	return slices.Contains(strings.Split(os.Getenv("NIXPI_E2E_ONLY"), ","), name)
}

// skipUninterrupted in NIXPI_E2E_ONLY skips the uninterrupted install (and
// the restored card's boot after it), for a scenario that neither starts
// from it nor compares with it: NIXPI_E2E_ONLY=mbr,no-uninterrupted. An
// empty list never skips it.
const skipUninterrupted = "no-uninterrupted"

func report(t *testing.T, p Problems) {
	t.Helper()
	for _, s := range p {
		t.Error(s)
	}
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(line + "\n")
}

// memoryMiB is NIXPI_E2E_MEMORY, the guest's memory in MiB (e.g. 1024 for a
// 1 GiB Pi 4); unset, the harness's default.
func memoryMiB(t *testing.T) int {
	v := os.Getenv("NIXPI_E2E_MEMORY")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 512 {
		t.Fatalf("NIXPI_E2E_MEMORY=%q: want the guest's memory in MiB, at least 512 (e.g. 1024)", v)
	}
	return n
}
