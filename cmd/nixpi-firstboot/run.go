package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/firstboot/config"
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
		return fail(stderr, fmt.Errorf("run: --target %q: want a device path such as /dev/sda or /dev/disk/by-id/usb-...", *target), exitUsage)
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

	cfg, sum, cfgErr := loadConfig(filepath.Join(d.root, *configPath), *configPath)
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

// loadConfig reads and checks the config; the digest is of the bytes read,
// so any edit on the card counts as a person acting on a failure.
func loadConfig(path, shownPath string) (*config.Config, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", engine.WithHint(fmt.Errorf("config: %w", err),
			"put the install config at "+shownPath+" (nixpi build writes it there)")
	}
	digest := sha256.Sum256(data)
	sum := hex.EncodeToString(digest[:])
	cfg, err := config.Parse(shownPath, data)
	if err != nil {
		return nil, sum, engine.WithHint(redactSecrets(err, data), "correct "+shownPath+" on the card (check it on a computer with: nixpi config check FILE)")
	}
	return cfg, sum, nil
}

// secretValueRE finds the value written for a secret key (psk,
// password_hash) on a config line, quoted or not, finished or not.
var secretValueRE = regexp.MustCompile(`(?:psk|password_hash)["']?\s*=\s*("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,}#]+)`)

// quotedRE finds what an error message quotes.
var quotedRE = regexp.MustCompile(`"[^"]*"|'[^']*'`)

// redactSecrets keeps the secrets of a config that failed to parse out of
// the error, which goes to the journal, install.log and the consoles. The
// config package never quotes a secret it understood, but a TOML syntax
// error quotes the token it stopped at (an unquoted psk, say), and a config
// that does not parse has no Secret values to hide behind.
func redactSecrets(err error, data []byte) error {
	var secrets []string
	for _, m := range secretValueRE.FindAllSubmatch(data, -1) {
		if v := strings.Trim(string(m[1]), `"'`); v != "" {
			secrets = append(secrets, v)
		}
	}
	if len(secrets) == 0 {
		return err
	}
	// Shorter pieces would blank out ordinary words (a user's name) and
	// give away next to nothing.
	const minPiece = 4
	redact := func(msg string) string {
		for _, s := range secrets {
			if len(s) >= minPiece {
				msg = strings.ReplaceAll(msg, s, config.Secret(s).String())
			}
		}
		return quotedRE.ReplaceAllStringFunc(msg, func(q string) string {
			inner := q[1 : len(q)-1]
			for _, s := range secrets {
				if len(inner) >= minPiece && strings.Contains(s, inner) {
					return q[:1] + config.Secret(s).String() + q[:1]
				}
			}
			return q
		})
	}
	var errs config.Errors
	if !errors.As(err, &errs) {
		if msg := redact(err.Error()); msg != err.Error() {
			return errors.New(msg)
		}
		return err
	}
	out := make(config.Errors, len(errs))
	for i, e := range errs {
		c := *e
		c.Msg = redact(c.Msg)
		out[i] = &c
	}
	return out
}
