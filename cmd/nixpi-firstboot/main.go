// Command nixpi-firstboot is the device service: "hook" (run once by
// systemd.run from cmdline.txt: installs the service), "run" (the unattended
// install, a systemd unit), "status" (the journal, readably) and "confirm"
// (on the installed NixOS: its word that it booted, then the card retired). The work
// lives in firstboot/; this file only parses flags and wires things up.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/configcheck"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/steps"
	"github.com/nixpi/nixpi/firstboot/system"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// deps is what the process touches, so tests run commands in-process
// against a temp root, a recording runner and a machine that never reboots.
type deps struct {
	root    string
	tools   system.Tools
	runner  system.Runner  // nil: the real runner, logging to install.log
	machine system.Machine // nil: systemctl reboot
	display engine.Display // nil: the consoles and LED under root
	now     func() time.Time
	sleep   func(ctx context.Context, d time.Duration) error
	steps   func() []engine.Step
	hook    func(ctx context.Context, root, bootDir string, logf func(format string, args ...any)) error
	// mountCard and unmountCard mount the card's FAT for confirm (nil:
	// the mount syscalls).
	mountCard   func(dev, dir string) error
	unmountCard func(dir string) error
	// nixParser checks the config's Nix (the zero value: nixpi's own
	// bracket check, what a Pi without Nix has).
	nixParser configcheck.Parser
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, deps{
		root:      "/",
		tools:     system.DefaultTools(),
		steps:     steps.All,
		hook:      runHook,
		nixParser: configcheck.FindParser(os.Getenv("PATH")),
	})
	stop()
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: nixpi-firstboot COMMAND [flags]

commands:
  run     --config FILE --boot-dir DIR [--target DEV] [--only STEP,...] [--dry-run]
          run the install steps (the nixpi-firstboot.service unit)
  status  [--boot-dir DIR]   print the install journal
  hook    [--boot-dir DIR]   install the service from the card (run by systemd.run)
  confirm [--trial FILE] [--card-dir DIR]
          on the installed NixOS (its nixpi-confirm unit): record on the card
          that NixOS booted from the SSD, then retire the card

With no arguments it runs the hook when the kernel command line names it in
systemd.run=. Exit status: 0 done or waiting for a later boot, 1 failed or
refused, 2 usage error.
`)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, d deps) int {
	if len(args) == 0 {
		if bootDir, ok := hookFromCmdline(d.root); ok {
			return cmdHook(ctx, []string{"--boot-dir", bootDir}, stdout, stderr, d)
		}
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stdout, stderr, d)
	case "status":
		return cmdStatus(args[1:], stdout, stderr, d)
	case "hook":
		return cmdHook(ctx, args[1:], stdout, stderr, d)
	case "confirm":
		return cmdConfirm(ctx, args[1:], stdout, stderr, d)
	case "-h", "--help", "help":
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "nixpi-firstboot: unknown command %q\n", args[0])
	usage(stderr)
	return exitUsage
}

// hookFromCmdline finds systemd.run=<fat>/nixpi/nixpi-firstboot in
// /proc/cmdline and returns <fat>.
func hookFromCmdline(root string) (string, bool) {
	data, err := os.ReadFile(filepath.Join(root, "proc/cmdline"))
	if err != nil {
		return "", false
	}
	for _, word := range strings.Fields(string(data)) {
		path, ok := strings.CutPrefix(word, "systemd.run=")
		if !ok || !filepath.IsAbs(path) {
			continue
		}
		dir, base := filepath.Split(filepath.Clean(path))
		if base == cardpath.BinaryName && filepath.Base(dir) == cardpath.Dir {
			return filepath.Dir(filepath.Clean(dir)), true
		}
	}
	return "", false
}

// defaultBootDir is where Raspberry Pi OS mounts the FAT partition:
// /boot/firmware on Bookworm and later, /boot before.
func defaultBootDir(root string) string {
	for _, dir := range []string{"/boot/firmware", "/boot"} {
		if _, err := os.Stat(filepath.Join(root, dir, cardpath.Dir)); err == nil {
			return dir
		}
	}
	return "/boot/firmware"
}

// parseFlags parses args; when it returns ok == false the command exits with
// code (0 for --help, 2 for a bad flag).
func parseFlags(fs *pflag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK, false
		}
		fmt.Fprintf(stderr, "nixpi-firstboot %s: %v\n", fs.Name(), err)
		return exitUsage, false
	}
	return 0, true
}

func fail(stderr io.Writer, err error, code int) int {
	fmt.Fprintf(stderr, "nixpi-firstboot: %v\n", err)
	return code
}
