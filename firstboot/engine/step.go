// Package engine runs the device service's ordered steps, records every event
// in the journal on the card's FAT partition, and resumes after reboots and
// power cuts: a step that started and never finished is redone from its start;
// a step that failed stops the service until a person acts.
package engine

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/progress"
	"github.com/nixpi/nixpi/firstboot/system"
)

// Step is one named stage of the install. Steps live one per file in
// firstboot/steps.
type Step interface {
	// Name is the step's name on the command line and in the journal.
	Name() string
	// Needs names the steps that must be done before this one may run
	// (checked by --only).
	Needs() []string
	// Probe reports, without changing anything, whether the step's effect is
	// already in place; why says what was found ("already formatted").
	Probe(ctx context.Context, env *Env) (done bool, why string, err error)
	// Run makes the effect. It must be safe to run again from its start
	// after an interruption at any point.
	Run(ctx context.Context, env *Env) error
}

// Env is everything a step may touch. Nothing in a step reaches the machine
// except through Env, so steps run against a temp root and a recording runner.
type Env struct {
	Config *config.Config
	// Root prefixes every file path ("/" on the device, t.TempDir() in tests).
	Root string
	// BootDir is the FAT partition's mount point as seen on the device
	// ("/boot/firmware"); the journal lives in BootDir/nixpi.
	BootDir string
	Run     system.Runner
	Machine system.Machine
	Tools   system.Tools
	// Progress receives human-readable lines for the console and the log.
	Progress func(format string, args ...any)
	// State carries facts from earlier steps (the target disk's identity) and
	// is saved in the journal with every event.
	State *journal.State
	// CrashPoint is called at named points inside destructive steps; tests set
	// it to simulate a power cut there. Nil on the device.
	CrashPoint func(point string)
	// TargetOverride is --target: a device path that replaces discovery and
	// the USB-transport rule only (every other safety check still applies).
	TargetOverride string
	// Now and Sleep default to the real clock; tests set them.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// LED sets the activity LED (waiting for network); nil does nothing.
	LED func(p progress.Pattern)
	// Redo is set while the engine reruns a step that an earlier boot
	// started and never finished (a power cut): what the step finds half
	// made by itself may need making again.
	Redo bool
	// OnNixOS is set when the service runs on the installed NixOS from the
	// SSD (nixpi-firstboot confirm), with the card's FAT mounted at
	// BootDir, instead of on the card's Raspberry Pi OS.
	OnNixOS bool
	// Boot is the journal's number of this boot (set by the engine).
	Boot int
	// Addresses lists the machine's global addresses, IPv4 first; nil
	// reads the real interfaces.
	Addresses func() ([]string, error)

	rebootWhy string
	tryboot   bool
}

// RequestReboot tells the engine that the step's effect needs a reboot: once
// Run returns nil the engine records it, reboots through Machine and exits.
func (e *Env) RequestReboot(why string) { e.rebootWhy, e.tryboot = why, false }

// RequestTrialReboot is RequestReboot into the bootloader's TRYBOOT mode
// (Machine.TryReboot): the next boot, and only that one, reads tryboot.txt.
func (e *Env) RequestTrialReboot(why string) { e.rebootWhy, e.tryboot = why, true }

// Clock returns the current time from Now, or the real clock.
func (e *Env) Clock() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Wait sleeps for d or until ctx is done, through Sleep when set.
func (e *Env) Wait(ctx context.Context, d time.Duration) error {
	if e.Sleep != nil {
		return e.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// SetLED sets the activity LED when the engine provided one.
func (e *Env) SetLED(p progress.Pattern) {
	if e.LED != nil {
		e.LED(p)
	}
}

// Path maps a device path under Root.
func (e *Env) Path(p string) string { return filepath.Join(e.Root, p) }

// Exists reports whether the device path (a tool, a config file) exists
// under Root; "" never does.
func (e *Env) Exists(p string) bool {
	if p == "" {
		return false
	}
	_, err := os.Stat(e.Path(p))
	return err == nil
}

// Crash calls CrashPoint when set.
func (e *Env) Crash(point string) {
	if e.CrashPoint != nil {
		e.CrashPoint(point)
	}
}

// Logf reports progress.
func (e *Env) Logf(format string, args ...any) {
	if e.Progress != nil {
		e.Progress(format, args...)
	}
}
