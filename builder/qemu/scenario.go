package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/system"
)

// Harness boots one built card through the end-to-end scenarios. Each
// scenario works on its own copy of the card and its own SSD under Dir.
type Harness struct {
	Dir   string
	Run   system.Runner
	Tools Tools
	Log   func(format string, args ...any)
	// BootDir is where the card's FAT is mounted on the device.
	BootDir string
	// BaseCmdline is the base image's cmdline.txt: what the card's must be
	// again once the hook has removed itself.
	BaseCmdline string
	BootTimeout time.Duration // per boot
	MaxBoots    int           // per scenario
	SSDSize     int64
	SSDSerial   string
	MemoryMiB   int
	CPUs        int
	// GuestForward is the VMs' one way out (VM.GuestForward).
	GuestForward string
	// WantSteps, when set, is the step list the journal must record. The
	// e2e test sets it from steps.All(); `nixpi test --qemu` cannot, as the
	// host binary does not link the device service.
	WantSteps []string
	// EEPROM is the bootloader every scenario's Pi starts with (the base
	// image's, as Raspberry Pi OS's rpi-eeprom package has it), unless the
	// scenario brings its own. With it the card gets the stand-in vcgencmd,
	// which reads it. nil: BOOT_ORDER's default, and no vcgencmd.
	EEPROM *EEPROM
	// SSDBoots: the stand-in nixpkgs has a kernel, so the installed SSD
	// boots and a scenario goes on past the retired card into NixOS.
	// Without one it stops at the hand-over.
	SSDBoots bool
	// SSDBootTimeout limits a boot of the SSD (0: BootTimeout).
	SSDBootTimeout time.Duration
	// bootFn, when set, runs a boot instead of QEMU (tests).
	bootFn func(ctx context.Context, vm *VM, n int, plan *BootPlan, watch Watcher) (*BootResult, error)
}

func (h *Harness) logf(format string, args ...any) {
	if h.Log != nil {
		h.Log(format, args...)
	}
}

func (h *Harness) vm(dir, card, ssd string) *VM {
	return &VM{Card: card, SSD: ssd, SSDSerial: h.SSDSerial, MemoryMiB: h.MemoryMiB, CPUs: h.CPUs,
		GuestForward: h.GuestForward, Dir: dir, Run: h.Run, Tools: h.Tools, Log: h.Log}
}

// pi is a scenario's emulated Pi with the harness's bootloader.
func (h *Harness) pi(dir, card, ssd string) *Pi {
	return &Pi{Card: card, SSD: ssd, EEPROM: h.EEPROM, Dir: dir, Run: h.Run, Tools: h.Tools}
}

// boot runs one boot with the Pi's EEPROM state visible to the guest.
func (h *Harness) boot(ctx context.Context, vm *VM, pi *Pi, n int, plan *BootPlan, watch Watcher) (*BootResult, error) {
	vm.EEPROM = pi.EEPROM
	timeout := h.BootTimeout
	if plan.Source != SourceCard && h.SSDBootTimeout > 0 {
		timeout = h.SSDBootTimeout
	}
	if h.bootFn != nil {
		return h.bootFn(ctx, vm, n, plan, watch)
	}
	return vm.Boot(ctx, n, plan, timeout, watch)
}

// bootCard powers the Pi on once and boots its card: the hook boot, the
// restored card's boot.
func (h *Harness) bootCard(ctx context.Context, vm *VM, pi *Pi, watch Watcher) (*BootResult, error) {
	plan, err := pi.PowerOn(ctx, 1)
	if err != nil {
		return nil, err
	}
	if plan.NoBoot != "" {
		return nil, fmt.Errorf("the Pi boots nothing: %s", plan.NoBoot)
	}
	if plan.Source != SourceCard {
		return nil, fmt.Errorf("the Pi boots from %s (%s), not the card", plan.Source, plan.Via)
	}
	return h.boot(ctx, vm, pi, 1, plan, watch)
}

// HookBoot is the first boot of a freshly written card.
type HookBoot struct {
	Boot *BootResult
	// Card is the card after the boot: the starting point of every
	// scenario, as if the person had powered the Pi on once.
	Card string
	// CmdlineBefore and CmdlineAfter are cmdline.txt before and after.
	CmdlineBefore, CmdlineAfter string
}

// RunHookBoot boots a copy of the built card once, with a blank SSD
// attached: systemd runs the hook from cmdline.txt, which installs the
// service and reboots.
func (h *Harness) RunHookBoot(ctx context.Context, built string) (*HookBoot, error) {
	dir := filepath.Join(h.Dir, "hook")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	card := filepath.Join(dir, "card.img")
	if err := CopySparseFile(built, card); err != nil {
		return nil, err
	}
	ssd := filepath.Join(dir, "ssd.img")
	if err := NewBlankDisk(ssd, h.SSDSize); err != nil {
		return nil, err
	}
	defer os.Remove(ssd)
	c, err := OpenCard(card, h.Run, h.Tools)
	if err != nil {
		return nil, err
	}
	before, err := c.ReadFile(ctx, "cmdline.txt")
	if err != nil {
		return nil, err
	}
	if h.EEPROM != nil {
		if err := InstallVcgencmd(ctx, h.Run, h.Tools, card); err != nil {
			return nil, err
		}
	}
	hookFailed := ""
	watch := func(line string) Action {
		// systemd.run_failure_action is "none": a failed hook would leave
		// the machine up until the boot's time limit.
		if strings.Contains(line, "Failed to start") && hookUnit.MatchString(line) {
			hookFailed = strings.TrimSpace(line)
			return PowerCut
		}
		return Continue
	}
	res, err := h.bootCard(ctx, h.vm(dir, card, ssd), h.pi(dir, card, ssd), watch)
	if err != nil {
		return nil, fmt.Errorf("hook boot: %w", err)
	}
	if hookFailed != "" {
		return nil, fmt.Errorf("hook boot: the hook failed: %q (console: %s)", hookFailed, res.Console)
	}
	if res.End != EndReboot {
		return nil, fmt.Errorf("hook boot: ended with %s, want a reboot (console: %s)", res.End, res.Console)
	}
	after, err := c.ReadFile(ctx, "cmdline.txt")
	if err != nil {
		return nil, err
	}
	return &HookBoot{Boot: res, Card: card, CmdlineBefore: string(before), CmdlineAfter: string(after)}, nil
}

// Cut is where a scenario cuts the power: inside Step, the moment the
// console shows a line containing At (the service logs every command as
// "run: ARGV" before it starts it, and its own progress lines). With
// Source set, only in a boot from there; Step "" is outside the service's
// steps (a boot of the SSD has none: SourceTryboot and "stand-in NixOS:
// started nixpi-confirm" cut the trial boot).
type Cut struct {
	Step   string
	At     string
	Source BootSource
}

// CutDone is where a Cut happened: the boot and the console line.
type CutDone struct {
	Boot int
	Line string
}

func (c *Cut) String() string {
	if c.Step == "" {
		return fmt.Sprintf("power cut in a %s boot at %q", c.Source, c.At)
	}
	return fmt.Sprintf("power cut in step %s at %q", c.Step, c.At)
}

func (c *Cut) matches(source BootSource, step, line string) bool {
	return (c.Source == "" || c.Source == source) && step == c.Step && strings.Contains(line, c.At)
}

// Install is the result of one scenario's boots.
type Install struct {
	Name  string
	Card  string
	SSD   string
	Boots []*BootResult
	// Finished: NixOS came up on the SSD from a USB boot (with
	// Harness.SSDBoots), or the service handed the Pi over to the SSD
	// (HandedOver, without), or it said all steps were done. Failed: it
	// recorded a failure and stopped.
	Finished, Failed bool
	// HandedOver: after the service's boots the card no longer boots (no
	// start4.elf at its root), so a Pi 4's bootloader moves on to the next
	// boot mode, the SSD. Without Harness.SSDBoots the harness stops there,
	// as the stand-in nixpkgs has no kernel to boot.
	HandedOver bool
	// TrybootRequests are the boots that ended in a reboot with '0 tryboot':
	// the next boot read the card's tryboot.txt.
	TrybootRequests []int
	// NixOSBoots are the boots in which the stand-in NixOS reached
	// multi-user.target on the SSD (BootResult.Source says from where).
	NixOSBoots []int
	// EEPROMUpdates are the staged updates the boot ROM flashed; EEPROM is
	// the bootloader's state at the end.
	EEPROMUpdates []EEPROMUpdate
	EEPROM        *EEPROM
	// Snapshot is the Pi when the guest first asked for a tryboot
	// (InstallOptions.SnapshotDir).
	Snapshot *Snapshot
	// Cuts are the power cuts that happened, in InstallOptions.Cuts' order.
	Cuts    []CutDone
	Journal *journal.Journal
	// InstallLog is nixpi/install.log from the card: every command the
	// service ran, as "run: ARGV".
	InstallLog string
}

// CardBoots are the boots of the card's own system (the service's boots).
func (in *Install) CardBoots() []*BootResult {
	var boots []*BootResult
	for _, b := range in.Boots {
		if b.Source == SourceCard && b.End != EndNoBoot {
			boots = append(boots, b)
		}
	}
	return boots
}

// NixOSFrom says whether the stand-in NixOS reached multi-user.target in
// a boot from source.
func (in *Install) NixOSFrom(source BootSource) bool {
	for _, n := range in.NixOSBoots {
		if in.Boots[n-1].Source == source {
			return true
		}
	}
	return false
}

// Consoles concatenates the boots' console logs.
func (in *Install) Consoles() (string, error) {
	var b strings.Builder
	for _, r := range in.Boots {
		if r.End == EndNoBoot {
			fmt.Fprintf(&b, "=== boot %d (%s: %s) ===\n", r.N, r.Source, r.Reason)
			continue
		}
		data, err := os.ReadFile(r.Console)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "=== boot %d (%s, %s) ===\n", r.N, r.Source, r.End)
		b.WriteString(StripANSI(strings.ReplaceAll(string(data), "\r", "")))
	}
	return b.String(), nil
}

var (
	stepHeader  = regexp.MustCompile(`step \d+ of \d+, ([a-z0-9-]+)`)
	allStepDone = regexp.MustCompile(`all \d+ steps done`)
)

// What the stand-in NixOS prints on the SSD (testdata/e2e/standin-nixpkgs,
// nixos/stage-2-init.sh and stage-1-init.sh).
const (
	StandInMultiUser  = "stand-in NixOS: reached multi-user.target"
	standInBootFailed = "stand-in NixOS: boot failed"
	kernelPanic       = "Kernel panic - not syncing"
)

// InstallOptions are what a scenario starts from and does besides booting.
type InstallOptions struct {
	// MakeSSD prepares the SSD image; nil: a blank one.
	MakeSSD func(path string) error
	// Cuts cut the power once each, in this order: a cut is armed once
	// the one before it has happened, so one install can be cut in
	// several steps, each resumed from what the cuts before left.
	Cuts []*Cut
	// Bystanders are attached beside the SSD as more USB disks.
	Bystanders []USBDisk
	// EEPROM is the bootloader the Pi starts with (nil: Harness.EEPROM),
	// e.g. one whose BOOT_ORDER does not reach USB (EEPROM.WithBootOrder).
	EEPROM *EEPROM
	// From starts the scenario where a snapshot was taken (its card, SSD,
	// bootloader and tryboot flag) instead of from the hooked card and
	// MakeSSD.
	From *Snapshot
	// SnapshotDir, when set, receives a Snapshot the first time the guest
	// asks for a tryboot, before the trial boot starts.
	SnapshotDir string
}

// Snapshot is a scenario's Pi between two boots: copies of its card and
// SSD, its bootloader and the tryboot flag.
type Snapshot struct {
	Card, SSD string
	EEPROM    *EEPROM
	Tryboot   bool
	// After is the boot it was taken after.
	After int
}

// takeSnapshot copies the Pi's disks (sparse) into dir.
func takeSnapshot(pi *Pi, dir string, after int) (*Snapshot, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Snapshot{Card: filepath.Join(dir, "card.img"), SSD: filepath.Join(dir, "ssd.img"), EEPROM: pi.EEPROM, Tryboot: pi.Tryboot, After: after}
	if err := CopySparseFile(pi.Card, s.Card); err != nil {
		return nil, err
	}
	if err := CopySparseFile(pi.SSD, s.SSD); err != nil {
		return nil, err
	}
	return s, nil
}

// RunInstall boots a copy of the hooked card with an SSD until the
// scenario is over: the stand-in NixOS comes up on the SSD from a USB boot
// (Harness.SSDBoots), the service finishes or fails (then it presses the
// power button), or the card is retired and the SSD cannot boot. Before
// every boot the emulated Pi chooses what boots (Pi.PowerOn): the card,
// its tryboot.txt once after a reboot with '0 tryboot', or the SSD once the
// card is retired; a boot of the SSD ends at multi-user.target with the
// power button.
func (h *Harness) RunInstall(ctx context.Context, name, hookedCard string, opts InstallOptions) (*Install, error) {
	dir := filepath.Join(h.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	in := &Install{Name: name, Card: filepath.Join(dir, "card.img"), SSD: filepath.Join(dir, "ssd.img")}
	pi := h.pi(dir, in.Card, in.SSD)
	if opts.EEPROM != nil {
		pi.EEPROM = opts.EEPROM
	}
	if f := opts.From; f != nil {
		if err := CopySparseFile(f.Card, in.Card); err != nil {
			return nil, err
		}
		if err := CopySparseFile(f.SSD, in.SSD); err != nil {
			return nil, err
		}
		pi.EEPROM, pi.Tryboot = f.EEPROM, f.Tryboot
	} else {
		if err := CopySparseFile(hookedCard, in.Card); err != nil {
			return nil, err
		}
		makeSSD := opts.MakeSSD
		if makeSSD == nil {
			makeSSD = func(path string) error { return NewBlankDisk(path, h.SSDSize) }
		}
		if err := makeSSD(in.SSD); err != nil {
			return nil, fmt.Errorf("%s: prepare the SSD: %w", name, err)
		}
	}
	card, err := OpenCard(in.Card, h.Run, h.Tools)
	if err != nil {
		return nil, err
	}
	vm := h.vm(dir, in.Card, in.SSD)
	vm.Bystanders = opts.Bystanders
	defer func() { in.EEPROM = pi.EEPROM }()
	for n := 1; n <= h.MaxBoots; n++ {
		plan, err := pi.PowerOn(ctx, n)
		if err != nil {
			return in, fmt.Errorf("%s: boot %d: %w", name, n, err)
		}
		if plan.Flashed != nil {
			in.EEPROMUpdates = append(in.EEPROMUpdates, EEPROMUpdate{Boot: n, BootOrder: plan.Flashed.BootOrder(), Timestamp: plan.Flashed.Timestamp})
			h.logf("%s: before boot %d the boot ROM flashed the staged EEPROM update (BOOT_ORDER %s, build %d) and renamed recovery.bin", name, n, plan.Flashed.BootOrder(), plan.Flashed.Timestamp)
		}
		for _, note := range plan.Notes {
			h.logf("%s: boot %d: %s", name, n, note)
		}
		in.HandedOver = in.HandedOver || (plan.CardRetired && len(in.CardBoots()) > 0)
		if plan.CardRetired && !h.SSDBoots {
			// The stand-in nixpkgs has no kernel: nothing to boot there.
			break
		}
		if plan.NoBoot != "" {
			in.Boots = append(in.Boots, &BootResult{N: n, End: EndNoBoot, Source: plan.Source, Reason: plan.NoBoot, Notes: plan.Notes})
			h.logf("%s: boot %d (%s): no boot: %s", name, n, plan.Source, plan.NoBoot)
			if plan.Source == SourceTryboot {
				// The trial found nothing; the Pi resets, and the flag is gone.
				continue
			}
			return in, fmt.Errorf("%s: boot %d: the Pi boots nothing: %s (consoles in %s)", name, n, plan.NoBoot, dir)
		}
		h.logf("%s: boot %d from %s: %s", name, n, plan.Source, plan.Via)
		current := ""
		polls := 0
		multiUser := false
		downLine := ""
		watch := func(line string) Action {
			if line == "" {
				// Every few polls, the journal on the card decides: a
				// failure stops the service without a console line we could
				// rely on.
				if polls++; polls%3 != 0 {
					return Continue
				}
				j, err := readJournal(ctx, card)
				if err != nil || len(j.Entries) == 0 {
					return Continue
				}
				if j.Entries[len(j.Entries)-1].Event == journal.Fail {
					in.Failed = true
					return PowerOff
				}
				return Continue
			}
			if m := stepHeader.FindStringSubmatch(line); m != nil {
				current = m[1]
			}
			if next := len(in.Cuts); next < len(opts.Cuts) && opts.Cuts[next].matches(plan.Source, current, line) {
				in.Cuts = append(in.Cuts, CutDone{Boot: n, Line: strings.TrimSpace(line)})
				h.logf("%s: cutting the power in boot %d at %q (%s)", name, n, strings.TrimSpace(line), opts.Cuts[next])
				return PowerCut
			}
			// systemd shortens "nixpi-firstboot.service - description" in
			// the middle to fit the console.
			if strings.Contains(line, "Failed to start nixpi-firstb") {
				in.Failed = true
				return PowerOff
			}
			if plan.Source == SourceCard {
				if allStepDone.MatchString(line) {
					in.Finished = true
					return PowerOff
				}
				return Continue
			}
			switch {
			case strings.Contains(line, StandInMultiUser):
				// Its units ran (a oneshot fsyncs what it writes before it
				// exits); the power button shuts it down cleanly.
				multiUser = true
				return PowerOff
			case strings.Contains(line, standInBootFailed) || strings.Contains(line, kernelPanic):
				downLine = strings.TrimSpace(line)
				return PowerCut
			}
			return Continue
		}
		res, err := h.boot(ctx, vm, pi, n, plan, watch)
		if res != nil {
			res.MultiUser = multiUser
			in.Boots = append(in.Boots, res)
		}
		if err != nil {
			return in, fmt.Errorf("%s: %w", name, err)
		}
		if downLine != "" {
			return in, fmt.Errorf("%s: boot %d from %s: the installed system did not come up: %q (console: %s)", name, n, plan.Source, downLine, res.Console)
		}
		if res.End == EndReboot && strings.HasSuffix(res.RebootCommand, " tryboot") {
			pi.Tryboot = true
			in.TrybootRequests = append(in.TrybootRequests, n)
			if opts.SnapshotDir != "" && in.Snapshot == nil {
				if in.Snapshot, err = takeSnapshot(pi, opts.SnapshotDir, n); err != nil {
					return in, fmt.Errorf("%s: snapshot at the tryboot request: %w", name, err)
				}
			}
		}
		if multiUser {
			in.NixOSBoots = append(in.NixOSBoots, n)
			in.Finished = in.Finished || plan.Source == SourceUSB
		}
		if in.Finished || in.Failed {
			break
		}
		if res.End == EndPowerOff && plan.Source == SourceCard {
			return in, fmt.Errorf("%s: the guest powered off in boot %d before the service finished (console: %s)", name, n, res.Console)
		}
	}
	j, err := readJournal(ctx, card)
	if err != nil {
		if in.HandedOver {
			return in, fmt.Errorf("%s: the card no longer boots, and its journal cannot be read: %w", name, err)
		}
		return in, err
	}
	if in.HandedOver && !h.SSDBoots {
		if !rebootedIntoSSD(j) {
			return in, fmt.Errorf("%s: the card no longer boots, but its journal records no hand-over confirmed by NixOS (consoles in %s)", name, dir)
		}
		in.Finished = true
	}
	if !in.Finished && !in.Failed {
		return in, fmt.Errorf("%s: the service neither finished nor failed, and NixOS did not come up on the SSD, within %d boots (consoles in %s)", name, h.MaxBoots, dir)
	}
	if n := len(in.Cuts); n < len(opts.Cuts) {
		return in, fmt.Errorf("%s: %s never happened: no such console line", name, opts.Cuts[n])
	}
	in.Journal = j
	log, err := card.ReadFile(ctx, cardpath.Log)
	if err != nil {
		return in, err
	}
	in.InstallLog = string(log)
	return in, nil
}

// pi4Firmware is what a Pi 4's bootloader loads from a card's FAT: without
// it the card is passed over for the next mode in BOOT_ORDER.
const pi4Firmware = "start4.elf"

// rebootedIntoSSD says whether the journal records the finished
// hand-over: NixOS confirmed from the SSD, and the card was retired.
func rebootedIntoSSD(j *journal.Journal) bool {
	state, err := j.CurrentState()
	return err == nil && state.HandOver != nil && state.HandOver.Finished && state.HandOver.Confirmed != nil
}

func readJournal(ctx context.Context, card *Card) (*journal.Journal, error) {
	data, err := card.ReadFile(ctx, cardpath.Journal)
	if err != nil {
		return nil, err
	}
	return journal.Read(bytes.NewReader(data))
}

// CopySparseFile copies a disk image, keeping all-zero blocks as holes.
func CopySparseFile(src, dst string) error {
	info, err := os.Stat(src)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(info.Size()); err != nil {
		f.Close()
		return err
	}
	if err := copySparse(f, 0, src); err != nil {
		f.Close()
		return fmt.Errorf("copy %q to %q: %w", src, dst, err)
	}
	return f.Close()
}
