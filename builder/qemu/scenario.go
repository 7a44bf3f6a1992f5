package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
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
	res, err := h.vm(dir, card, ssd).Boot(ctx, 1, h.BootTimeout, watch)
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
// "run: ARGV" before it starts it, and its own progress lines).
type Cut struct {
	Step string
	At   string
}

func (c *Cut) String() string { return fmt.Sprintf("power cut in step %s at %q", c.Step, c.At) }

// Install is the result of one scenario's boots.
type Install struct {
	Name  string
	Card  string
	SSD   string
	Boots []*BootResult
	// Finished: the service handed the Pi over to the SSD (HandedOver), or
	// said all steps were done. Failed: it recorded a failure and stopped.
	Finished, Failed bool
	// HandedOver: after the service's last reboot the card no longer
	// boots (no start4.elf at its root), so a Pi 4's bootloader moves on to
	// the next boot mode, the SSD; the harness stops there, as it cannot
	// boot the installed NixOS (the stand-in nixpkgs has no kernel).
	HandedOver bool
	// CutBoot is the boot in which the power was cut (0: none).
	CutBoot int
	// CutLine is the console line at which the power was cut.
	CutLine string
	Journal *journal.Journal
	// InstallLog is nixpi/install.log from the card: every command the
	// service ran, as "run: ARGV".
	InstallLog string
}

// Consoles concatenates the boots' console logs.
func (in *Install) Consoles() (string, error) {
	var b strings.Builder
	for _, r := range in.Boots {
		data, err := os.ReadFile(r.Console)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "=== boot %d (%s) ===\n", r.N, r.End)
		b.WriteString(StripANSI(strings.ReplaceAll(string(data), "\r", "")))
	}
	return b.String(), nil
}

var (
	stepHeader  = regexp.MustCompile(`step \d+ of \d+, ([a-z0-9-]+)`)
	allStepDone = regexp.MustCompile(`all \d+ steps done`)
)

// RunInstall boots a copy of the hooked card with the SSD prepared by
// makeSSD until the service finishes or fails (then it presses the power
// button), cutting the power once when cut says so.
//
// bystanders are attached beside the SSD as more USB disks.
func (h *Harness) RunInstall(ctx context.Context, name, hookedCard string, makeSSD func(path string) error, cut *Cut, bystanders ...USBDisk) (*Install, error) {
	dir := filepath.Join(h.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	in := &Install{Name: name, Card: filepath.Join(dir, "card.img"), SSD: filepath.Join(dir, "ssd.img")}
	if err := CopySparseFile(hookedCard, in.Card); err != nil {
		return nil, err
	}
	if err := makeSSD(in.SSD); err != nil {
		return nil, fmt.Errorf("%s: prepare the SSD: %w", name, err)
	}
	card, err := OpenCard(in.Card, h.Run, h.Tools)
	if err != nil {
		return nil, err
	}
	vm := h.vm(dir, in.Card, in.SSD)
	vm.Bystanders = bystanders
	cutDone := cut == nil
	for n := 1; n <= h.MaxBoots; n++ {
		current := ""
		polls := 0
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
			if !cutDone && current == cut.Step && strings.Contains(line, cut.At) {
				cutDone = true
				in.CutBoot, in.CutLine = n, strings.TrimSpace(line)
				h.logf("%s: cutting the power in boot %d at %q", name, n, in.CutLine)
				return PowerCut
			}
			// systemd shortens "nixpi-firstboot.service - description" in
			// the middle to fit the console.
			if strings.Contains(line, "Failed to start nixpi-firstb") {
				in.Failed = true
				return PowerOff
			}
			if allStepDone.MatchString(line) {
				in.Finished = true
				return PowerOff
			}
			return Continue
		}
		res, err := vm.Boot(ctx, n, h.BootTimeout, watch)
		if res != nil {
			in.Boots = append(in.Boots, res)
		}
		if err != nil {
			return in, fmt.Errorf("%s: %w", name, err)
		}
		if in.Finished || in.Failed {
			break
		}
		if res.End == EndReboot {
			boots, err := cardBoots(ctx, card)
			if err != nil {
				return in, fmt.Errorf("%s: %w", name, err)
			}
			if !boots {
				in.HandedOver = true
				break
			}
		}
		if res.End == EndPowerOff {
			return in, fmt.Errorf("%s: the guest powered off in boot %d before the service finished (console: %s)", name, n, res.Console)
		}
	}
	j, err := readJournal(ctx, card)
	if err != nil && !in.HandedOver {
		return in, err
	}
	if in.HandedOver {
		if err != nil {
			return in, fmt.Errorf("%s: the card no longer boots, and its journal cannot be read: %w", name, err)
		}
		if !rebootedIntoSSD(j) {
			return in, fmt.Errorf("%s: the card no longer boots, but its journal does not end in the hand-over's reboot (consoles in %s)", name, dir)
		}
		in.Finished = true
	}
	if !in.Finished && !in.Failed {
		return in, fmt.Errorf("%s: the service neither finished nor failed within %d boots (consoles in %s)", name, h.MaxBoots, dir)
	}
	if !cutDone {
		return in, fmt.Errorf("%s: %s never happened: no such console line in step %s", name, cut, cut.Step)
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

// cardBoots says whether a Pi 4 would boot the card.
func cardBoots(ctx context.Context, card *Card) (bool, error) {
	_, err := card.ReadFile(ctx, pi4Firmware)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// rebootedIntoSSD says whether the journal ends in the hand-over: the
// service finished and its last step asked for the reboot.
func rebootedIntoSSD(j *journal.Journal) bool {
	if len(j.Entries) == 0 {
		return false
	}
	state, err := j.CurrentState()
	last := j.Entries[len(j.Entries)-1]
	return err == nil && state.HandOver != nil && state.HandOver.Finished && state.HandOver.Rebooted &&
		last.Event == journal.Reboot && len(state.Steps) > 0 && last.Step == state.Steps[len(state.Steps)-1]
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
