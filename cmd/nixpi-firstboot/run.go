package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/configcheck"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/progress"
	"github.com/nixpi/nixpi/firstboot/statuspage"
	"github.com/nixpi/nixpi/firstboot/system"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer, d deps) int {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	configPath := fs.String("config", "", "the install config on the card (`FILE`, e.g. /boot/firmware/nixpi/nixpi.toml)")
	bootDir := fs.String("boot-dir", "", "where the card's FAT partition is mounted (`DIR`, e.g. /boot/firmware)")
	target := fs.String("target", "", "install onto `DEV` instead of discovering the USB disk (all other safety checks still apply)")
	only := fs.StringSlice("only", nil, "run only these steps (`STEP,...`), in their usual order")
	dryRun := fs.Bool("dry-run", false, "print the plan (each step and its check) and change nothing")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	switch {
	case fs.NArg() > 0:
		return fail(stderr, fmt.Errorf("run: unexpected argument %q", fs.Arg(0)), exitUsage)
	case *configPath == "" || *bootDir == "":
		return fail(stderr, errors.New("run: --config and --boot-dir are required"), exitUsage)
	case !filepath.IsAbs(*configPath) || !filepath.IsAbs(*bootDir):
		return fail(stderr, errors.New("run: --config and --boot-dir must be absolute paths"), exitUsage)
	case *target != "" && !strings.HasPrefix(*target, "/dev/"):
		return fail(stderr, fmt.Errorf("run: --target %q: want a device path such as /dev/sda or /dev/disk/by-id/usb-NAME", *target), exitUsage)
	}

	env := &engine.Env{
		Root:           d.root,
		BootDir:        *bootDir,
		Tools:          d.tools,
		TargetOverride: *target,
		Now:            d.now,
		Sleep:          d.sleep,
	}
	eng := &engine.Engine{Steps: d.steps(), Env: env, Out: stdout}
	if _, err := eng.Select(*only); err != nil {
		return fail(stderr, err, exitUsage)
	}
	env.Run = d.runner
	if env.Run == nil {
		env.Run = system.ExecRunner{Log: eng.LogLine}
	}
	env.Machine = d.machine
	if env.Machine == nil {
		env.Machine = system.SystemdMachine{Run: env.Run, Systemctl: d.tools.Systemctl}
	}
	if !*dryRun {
		eng.Display = d.display
		if eng.Display == nil {
			eng.Display = &progress.Display{Root: d.root, Warn: eng.LogLine}
		}
	}

	cfg, sum, cfgErr := loadConfig(ctx, filepath.Join(d.root, *configPath), *configPath, d.nixParser, eng.LogLine)
	eng.ConfigSHA256 = sum
	env.Config = cfg
	if *dryRun {
		if cfgErr != nil {
			return fail(stderr, cfgErr, exitFailure)
		}
		if err := eng.Plan(ctx, *only, stdout); err != nil {
			return fail(stderr, err, exitFailure)
		}
		return exitOK
	}
	if cfg != nil && cfg.Status.Enable {
		stop, addr, err := statuspage.Start(cfg.Status.Listen, filepath.Join(d.root, *bootDir))
		if err != nil {
			eng.LogLine(fmt.Sprintf("warning: %v (the install goes on without it)", err))
		} else {
			eng.LogLine(fmt.Sprintf("status page on http://%s/", addr))
			defer stop()
		}
	}
	var outcome engine.Outcome
	var err error
	if cfgErr != nil {
		outcome, err = eng.RecordFailure(engine.ConfigStep, cfgErr)
	} else {
		outcome, err = eng.Run(ctx, *only)
	}
	if err != nil {
		var ue *engine.UsageError
		if errors.As(err, &ue) {
			return fail(stderr, err, exitUsage)
		}
		return fail(stderr, err, outcome.ExitCode())
	}
	return outcome.ExitCode()
}

// loadConfig reads the config and checks it as nixpi build did
// (configcheck: a release without a pin, an extra_module that does not
// parse), before any step touches a disk; logf hears how the module was
// parsed when Nix did not. The digest is of the bytes read with the secrets
// blanked (config.ChangeDigest), so an edit on the card counts as a person
// acting on a failure, and the journal confirms no guessed secret.
func loadConfig(ctx context.Context, path, shownPath string, nix configcheck.Parser, logf func(string)) (*config.Config, string, error) {
	// While the hand-over's scrub rewrites the config in place, a power cut
	// can tear it; the scrubbed copy beside it is whole.
	if _, err := os.Stat(path + ".scrubbed"); err == nil {
		path, shownPath = path+".scrubbed", shownPath+".scrubbed"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", engine.WithHint(fmt.Errorf("config: %w", err),
			"put the install config at "+shownPath+" (nixpi build writes it there)")
	}
	sum := config.ChangeDigest(data)
	res, err := configcheck.Check(ctx, shownPath, data, nix)
	if err != nil {
		return nil, sum, engine.WithHint(err, "correct "+shownPath+" on the card (check it on a computer with: nixpi config check FILE)")
	}
	if res.ModuleParsedBy != "" && !nix.ByNix() {
		logf("config: nixos.extra_module checked by " + res.ModuleParsedBy + " (no nix-instantiate on PATH yet); Nix parses it when it builds the system")
	}
	return res.Config, sum, nil
}
