package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/hook"
	"github.com/nixpi/nixpi/firstboot/progress"
)

func cmdHook(ctx context.Context, args []string, stdout, stderr io.Writer, d deps) int {
	fs := pflag.NewFlagSet("hook", pflag.ContinueOnError)
	bootDir := fs.String("boot-dir", "", "where the card's FAT partition is mounted (`DIR`; default: from systemd.run= on the kernel command line)")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return fail(stderr, fmt.Errorf("hook: unexpected argument %q", fs.Arg(0)), exitUsage)
	}
	if *bootDir == "" {
		dir, ok := hookFromCmdline(d.root)
		if !ok {
			return fail(stderr, errors.New("hook: --boot-dir is required when the kernel command line has no systemd.run=.../nixpi/nixpi-firstboot"), exitUsage)
		}
		*bootDir = dir
	}
	display := d.display
	if display == nil {
		display = &progress.Display{Root: d.root}
	}
	say := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		fmt.Fprintln(stdout, line)
		display.Say(line)
	}
	// The journal tells the whole story on the card, the hook's part too.
	recorder := &engine.Engine{Env: &engine.Env{Root: d.root, BootDir: *bootDir, Now: d.now}}
	if err := d.hook(ctx, d.root, *bootDir, say); err != nil {
		say("first-boot hook failed: %v", err)
		if jerr := recorder.RecordHook(err); jerr != nil {
			say("journal: %v", jerr)
		}
		display.LED(progress.Failed)
		return fail(stderr, fmt.Errorf("hook: %w", err), exitFailure)
	}
	if jerr := recorder.RecordHook(nil); jerr != nil {
		say("journal: %v", jerr)
	}
	say("service installed; rebooting to start the install")
	return exitOK
}

// runHook installs the service from the card's payload (firstboot/hook).
func runHook(ctx context.Context, root, bootDir string, logf func(format string, args ...any)) error {
	return hook.Run(ctx, hook.Env{Root: root, BootDir: bootDir, Logf: logf})
}
