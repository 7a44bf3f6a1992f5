package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/system"
)

// fakeBoot is what a boot does instead of running QEMU: the source the Pi
// must have chosen, console lines the watcher sees, something done to the
// disks meanwhile, and how the boot ends when the watcher does nothing.
type fakeBoot struct {
	source BootSource
	lines  []string
	act    func(t *testing.T, vm *VM)
	end    End
}

// fakeHarness runs boots from a script; a boot the script does not have,
// or from another source, fails the test.
func fakeHarness(t *testing.T, script []fakeBoot) *Harness {
	h := &Harness{Dir: t.TempDir(), Run: system.ExecRunner{}, Tools: DefaultTools(), MaxBoots: 6, SSDBoots: true,
		BootTimeout: time.Minute, Log: t.Logf}
	h.bootFn = func(ctx context.Context, vm *VM, n int, plan *BootPlan, watch Watcher) (*BootResult, error) {
		defer os.Remove(plan.Kernel)
		defer os.Remove(plan.Initrd)
		if n > len(script) {
			t.Fatalf("boot %d from %s (%s): the script has %d boots", n, plan.Source, plan.Via, len(script))
		}
		b := script[n-1]
		if plan.Source != b.source {
			t.Fatalf("boot %d is from %s (%s), want %s", n, plan.Source, plan.Via, b.source)
		}
		res := &BootResult{N: n, Source: plan.Source, Via: plan.Via, Console: filepath.Join(vm.Dir, fmt.Sprintf("console-%d.log", n)), End: b.end}
		var console []string
		for _, line := range b.lines {
			console = append(console, line)
			if m := rebootCommand.FindStringSubmatch(line); m != nil {
				res.RebootCommand = m[1]
			}
			if a := watch(line); a == PowerCut {
				res.End = EndCut
				break
			} else if a == PowerOff {
				res.End = EndPowerOff
				break
			}
		}
		if res.End != EndCut && b.act != nil {
			b.act(t, vm)
		}
		return res, os.WriteFile(res.Console, []byte(strings.Join(console, "\n")+"\n"), 0o644)
	}
	return h
}

func mdel(t *testing.T, img string, offset int64, names ...string) {
	t.Helper()
	for _, n := range names {
		if out, err := exec.Command("/usr/bin/mdel", "-i", fmt.Sprintf("%s@@%d", img, offset), "::"+n).CombinedOutput(); err != nil {
			t.Fatalf("mdel %s: %v: %s", n, err, out)
		}
	}
}

// retire does what the device's hand-over does to the card's boot files
// (enough of it for the firmware to pass the card over).
func retireCard(t *testing.T, vm *VM) { mdel(t, vm.Card, 1<<20, pi4Firmware, cardpath.ConfigTxt) }

func sources(in *Install) []string {
	var s []string
	for _, b := range in.Boots {
		s = append(s, fmt.Sprintf("%s %s", b.Source, b.End))
	}
	return s
}

func TestRunInstallTrybootThenUSB(t *testing.T) {
	t.Parallel()
	hooked := fatCardImage(t, trialCard())
	ssd := fatSSDImage(t, testSSD())
	h := fakeHarness(t, []fakeBoot{
		{source: SourceCard, lines: []string{"nixpi-firstboot[301]: step 21 of 21, reboot: try NixOS on the SSD once", "[  99.1] reboot: Restarting system with command '0 tryboot'"}, end: EndReboot},
		{source: SourceTryboot, lines: []string{"stand-in NixOS: started nixpi-confirm", "stand-in NixOS: nixpi-confirm exited with 0", StandInMultiUser, "never seen"}, act: retireCard, end: EndTimeout},
		{source: SourceUSB, lines: []string{StandInMultiUser}, end: EndTimeout},
	})
	in, err := h.RunInstall(context.Background(), "trial", hooked, InstallOptions{
		MakeSSD:     func(p string) error { return CopySparseFile(ssd, p) },
		SnapshotDir: filepath.Join(h.Dir, "at-tryboot"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"card reboot", "tryboot power off", "usb power off"}; !slices.Equal(sources(in), want) {
		t.Errorf("boots %v, want %v", sources(in), want)
	}
	if !in.Finished || in.Failed || !in.HandedOver || !slices.Equal(in.TrybootRequests, []int{1}) || !slices.Equal(in.NixOSBoots, []int{2, 3}) ||
		!in.NixOSFrom(SourceTryboot) || !in.NixOSFrom(SourceUSB) || len(in.CardBoots()) != 1 {
		t.Errorf("install %+v", in)
	}
	s := in.Snapshot
	if s == nil || s.After != 1 || !s.Tryboot {
		t.Fatalf("snapshot %+v, want one after boot 1 with the tryboot flag", s)
	}
	// Taken before the trial boot retired the card.
	card, err := OpenCard(s.Card, h.Run, h.Tools)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := hasFile(context.Background(), card, pi4Firmware); !ok || err != nil {
		t.Errorf("the snapshot's card has no %s (%v): taken after the trial boot", pi4Firmware, err)
	}

	// From the snapshot with a damaged SSD: the trial finds nothing, the Pi
	// resets, and the next boot is the card's own.
	mdel(t, s.SSD, 1<<20, "nixos/aaa-linux-Image")
	h2 := fakeHarness(t, []fakeBoot{
		{source: SourceCard, lines: []string{"[FAILED] Failed to start nixpi-firstboot.service - nixpi: install NixOS onto the USB SSD."}, end: EndTimeout},
	})
	h2.bootFn = shifted(h2.bootFn, 1)
	in, err = h2.RunInstall(context.Background(), "damaged", "", InstallOptions{From: s})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tryboot no boot", "card power off"}; !slices.Equal(sources(in), want) || !in.Failed {
		t.Errorf("boots %v (failed %v), want %v", sources(in), in.Failed, want)
	}
	if r := in.Boots[0].Reason; !strings.Contains(r, "U-Boot, which found nothing to boot") || !strings.Contains(r, "LINUX ../nixos/aaa-linux-Image") {
		t.Errorf("the no-boot reason: %q", r)
	}
}

// shifted makes a fake harness's script start at boot n+1: the boots
// before it end in no boot and never reach it.
func shifted(fn func(context.Context, *VM, int, *BootPlan, Watcher) (*BootResult, error), n int) func(context.Context, *VM, int, *BootPlan, Watcher) (*BootResult, error) {
	return func(ctx context.Context, vm *VM, i int, plan *BootPlan, w Watcher) (*BootResult, error) {
		return fn(ctx, vm, i-n, plan, w)
	}
}

func TestRunInstallOldHandOver(t *testing.T) {
	t.Parallel()
	hooked := fatCardImage(t, testCard())
	ssd := fatSSDImage(t, testSSD())
	h := fakeHarness(t, []fakeBoot{
		{source: SourceCard, lines: []string{"nixpi-firstboot[301]: step 20 of 20, reboot: into NixOS on the SSD", "[  99.1] reboot: Restarting system"}, act: retireCard, end: EndReboot},
		{source: SourceUSB, lines: []string{"stand-in NixOS: skipped nixpi-confirm: ConditionPathExists=/var/lib/nixpi/trial.json, and /var/lib/nixpi/trial.json does not exist", StandInMultiUser}, end: EndTimeout},
	})
	in, err := h.RunInstall(context.Background(), "old", hooked, InstallOptions{MakeSSD: func(p string) error { return CopySparseFile(ssd, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"card reboot", "usb power off"}; !slices.Equal(sources(in), want) || !in.Finished || !in.HandedOver || len(in.TrybootRequests) != 0 || !slices.Equal(in.NixOSBoots, []int{2}) {
		t.Errorf("boots %v, install %+v", sources(in), in)
	}
}

func TestRunInstallNothingBoots(t *testing.T) {
	t.Parallel()
	ssd := fatSSDImage(t, testSSD())
	for name, tc := range map[string]struct {
		state  *EEPROM
		ssd    func(t *testing.T, p string) error
		lines  []string
		source BootSource
		want   string
	}{
		"an order without USB": {state: &EEPROM{Config: []byte("[all]\nBOOT_ORDER=0xf1\n")}, source: "", want: "the Pi boots nothing: BOOT_ORDER 0xf1 boots nothing"},
		"an SSD without U-Boot": {ssd: func(t *testing.T, p string) error {
			err := CopySparseFile(ssd, p)
			mdel(t, p, 1<<20, "u-boot-rpi4.bin")
			return err
		}, source: SourceUSB, want: "the Pi boots nothing: the firmware on the SSD: config.txt names kernel=u-boot-rpi4.bin: no u-boot-rpi4.bin"},
		"NixOS fails in stage 1": {lines: []string{"stand-in NixOS: boot failed in stage 1: /dev/disk/by-label/root (for /) did not appear within 30 s"}, source: SourceUSB,
			want: "boot 2 from usb: the installed system did not come up: \"stand-in NixOS: boot failed in stage 1"},
		"a kernel panic": {lines: []string{"[    3.1] Kernel panic - not syncing: VFS: Unable to mount root fs"}, source: SourceUSB, want: "did not come up"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			script := []fakeBoot{{source: SourceCard, lines: []string{"[  99.1] reboot: Restarting system"}, act: retireCard, end: EndReboot}}
			if tc.lines != nil {
				script = append(script, fakeBoot{source: tc.source, lines: tc.lines, end: EndTimeout})
			}
			h := fakeHarness(t, script)
			makeSSD := func(p string) error { return CopySparseFile(ssd, p) }
			if tc.ssd != nil {
				makeSSD = func(p string) error { return tc.ssd(t, p) }
			}
			in, err := h.RunInstall(context.Background(), "broken", fatCardImage(t, testCard()), InstallOptions{MakeSSD: makeSSD, EEPROM: tc.state})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if last := in.Boots[len(in.Boots)-1]; last.Source != tc.source || !in.HandedOver {
				t.Errorf("the last boot %+v (handed over %v), want one from %q", last, in.HandedOver, tc.source)
			}
		})
	}
}

func TestCutMatches(t *testing.T) {
	t.Parallel()
	step := &Cut{Step: "install", At: "copy --no-check-sigs"}
	trial := &Cut{Source: SourceTryboot, At: "started nixpi-confirm"}
	for _, tc := range []struct {
		cut         *Cut
		source      BootSource
		current, at string
		want        bool
	}{
		{step, SourceCard, "install", "run: nix copy --no-check-sigs", true},
		{step, SourceCard, "system", "run: nix copy --no-check-sigs", false},
		{trial, SourceTryboot, "", "stand-in NixOS: started nixpi-confirm", true},
		{trial, SourceUSB, "", "stand-in NixOS: started nixpi-confirm", false},
		{trial, SourceTryboot, "", "stand-in NixOS: reached multi-user.target", false},
	} {
		if got := tc.cut.matches(tc.source, tc.current, tc.at); got != tc.want {
			t.Errorf("%s in a %s boot, step %q, line %q: %v, want %v", tc.cut, tc.source, tc.current, tc.at, got, tc.want)
		}
	}
}
