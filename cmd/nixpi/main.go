// Command nixpi turns a Raspberry Pi OS image into a card that installs NixOS
// onto the Pi's USB SSD by itself. This file only dispatches; each subcommand
// lives in its own file and the work lives in builder/ and firstboot/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// cli is one invocation's world, so tests run commands in-process.
type cli struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

type command struct {
	summary string
	run     func(c *cli, args []string) int
}

var commands = map[string]command{
	"build":        {"write a self-installing card image from a Raspberry Pi OS image", runBuild},
	"inspect":      {"show what is on an image or card (partitions, hook, config, journal)", runInspect},
	"config":       {"write an example install config (init) or check one (check)", runConfig},
	"eeprom":       {"read or change a Pi 4 bootloader EEPROM image's config", runEeprom},
	"report":       {"print the install journal the Pi wrote to a card", runReport},
	"restore-card": {"make a card the install retired bootable again", runRestoreCard},
	"test":         {"boot a built card under QEMU with a USB disk and check the install (--qemu)", runTest},
	"version":      {"print the nixpi version", runVersion},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		c.usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "nixpi: unknown command %q\n", args[0])
		c.usage(stderr)
		return exitUsage
	}
	return cmd.run(c, args[1:])
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprintln(w, "usage: nixpi COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-12s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w, "\nRun 'nixpi COMMAND --help' for a command's flags.")
}

// usageError marks an error as the caller's wrong use of flags (exit 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// fail prints err and returns its exit status: 2 for usage errors, 1 otherwise.
func (c *cli) fail(err error) int {
	fmt.Fprintf(c.stderr, "nixpi: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}
