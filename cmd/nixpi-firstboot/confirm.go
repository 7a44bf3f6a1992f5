package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/progress"
	"github.com/nixpi/nixpi/firstboot/steps"
	"github.com/nixpi/nixpi/firstboot/system"
)

// cardWait bounds the wait for the card to appear: the SD card's driver
// may enumerate after the confirm unit starts.
const cardWait = 60 * time.Second

// cmdConfirm runs on the installed NixOS, from the confirm unit: it finds
// the card by the PARTUUID the trial recorded, mounts its FAT, and runs the
// hand-over's last steps against the card's journal (confirm, scrub,
// retire, done). Once they are done the trial record goes, and with it the
// unit's condition.
func cmdConfirm(ctx context.Context, args []string, stdout, stderr io.Writer, d deps) int {
	fs := pflag.NewFlagSet("confirm", pflag.ContinueOnError)
	trialPath := fs.String("trial", "/"+cardpath.SSDTrial, "the trial record the card's service left on the SSD (`FILE`)")
	cardDir := fs.String("card-dir", "/run/nixpi/card", "where to mount the card's FAT partition (`DIR`)")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return fail(stderr, fmt.Errorf("confirm: unexpected argument %q", fs.Arg(0)), exitUsage)
	}
	if !filepath.IsAbs(*trialPath) || !filepath.IsAbs(*cardDir) {
		return fail(stderr, errors.New("confirm: --trial and --card-dir must be absolute paths"), exitUsage)
	}
	data, err := os.ReadFile(filepath.Join(d.root, *trialPath))
	if err != nil {
		return fail(stderr, fmt.Errorf("confirm: no trial to confirm: %w", err), exitFailure)
	}
	var rec cardpath.TrialRecord
	if err := json.Unmarshal(data, &rec); err != nil || !disk.ValidMBRPartUUID(rec.CardPartUUID) {
		return fail(stderr, fmt.Errorf("confirm: %s is damaged (%v): it must name the card's PARTUUID", *trialPath, err), exitFailure)
	}
	dev, err := waitForCard(ctx, d, rec.CardPartUUID)
	if err != nil {
		return fail(stderr, err, exitFailure)
	}
	mountPoint := filepath.Join(d.root, *cardDir)
	if err := os.MkdirAll(mountPoint, 0o700); err != nil {
		return fail(stderr, fmt.Errorf("confirm: %w", err), exitFailure)
	}
	mount, unmount := d.mountCard, d.unmountCard
	if mount == nil {
		mount, unmount = mountFAT, unmountFAT
	}
	if err := mount(filepath.Join(d.root, dev), mountPoint); err != nil {
		return fail(stderr, fmt.Errorf("confirm: mount the card's FAT %q at %q: %w", dev, *cardDir, err), exitFailure)
	}
	defer func() {
		if err := unmount(mountPoint); err != nil {
			fmt.Fprintf(stderr, "nixpi-firstboot: confirm: unmount %q: %v\n", *cardDir, err)
		}
	}()

	env := &engine.Env{Root: d.root, BootDir: *cardDir, Tools: d.tools, Now: d.now, Sleep: d.sleep, OnNixOS: true}
	eng := &engine.Engine{Steps: d.steps(), Env: env, Out: stdout}
	env.Run = d.runner
	if env.Run == nil {
		env.Run = system.ExecRunner{Log: eng.LogLine}
	}
	env.Machine = d.machine
	if env.Machine == nil {
		env.Machine = system.SystemdMachine{Run: env.Run, Systemctl: d.tools.Systemctl}
	}
	eng.Display = d.display
	if eng.Display == nil {
		eng.Display = &progress.Display{Root: d.root, Warn: eng.LogLine}
	}
	configPath := filepath.Join(*cardDir, cardpath.Config)
	cfg, sum, cfgErr := loadConfig(ctx, filepath.Join(d.root, configPath), configPath, d.nixParser, eng.LogLine)
	eng.ConfigSHA256, env.Config = sum, cfg
	if cfgErr != nil {
		outcome, err := eng.RecordFailure(engine.ConfigStep, cfgErr)
		return fail(stderr, err, outcome.ExitCode())
	}
	outcome, err := eng.Run(ctx, steps.NixOSSteps())
	if err != nil {
		return fail(stderr, err, outcome.ExitCode())
	}
	if outcome != engine.Finished {
		return outcome.ExitCode()
	}
	// Done: the unit's condition goes, so it never runs again.
	if err := os.Remove(filepath.Join(d.root, *trialPath)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail(stderr, fmt.Errorf("confirm: the hand-over is done, but %s stays: %w", *trialPath, err), exitFailure)
	}
	unix.Sync()
	return exitOK
}

// waitForCard finds the card's FAT partition, waiting for it to appear.
func waitForCard(ctx context.Context, d deps, partuuid string) (string, error) {
	sleep := d.sleep
	if sleep == nil {
		sleep = func(ctx context.Context, t time.Duration) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(t):
				return nil
			}
		}
	}
	for waited := time.Duration(0); ; waited += 2 * time.Second {
		dev, err := disk.FindMBRPartition(d.root, partuuid)
		if err == nil {
			return dev, nil
		}
		if !errors.Is(err, os.ErrNotExist) || waited >= cardWait {
			return "", fmt.Errorf("confirm: the SD card the install ran from (PARTUUID %s) is not here after %s: %w; put it back in and reboot, or retire it by hand on a computer", partuuid, cardWait, err)
		}
		if err := sleep(ctx, 2*time.Second); err != nil {
			return "", err
		}
	}
}

// mountFAT mounts the card's FAT without following anything on it: no
// devices, no set-uid, nothing executed from it.
func mountFAT(dev, dir string) error {
	return unix.Mount(dev, dir, "vfat", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "fmask=0077,dmask=0077")
}

func unmountFAT(dir string) error { return unix.Unmount(dir, 0) }
