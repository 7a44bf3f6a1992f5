// Command nixpi turns a Raspberry Pi OS image into a card that installs NixOS
// onto the Pi's USB SSD by itself. This file only dispatches; each subcommand
// lives in its own file and the work lives in builder/ and firstboot/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/builder/flash"
	"github.com/nixpi/nixpi/firstboot/termtext"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// cli is one invocation's world, so tests run commands in-process.
type cli struct {
	ctx   context.Context
	stdin io.Reader
	// stdout and stderr escape all they print (termtext): much of it comes
	// from a card, a disk, a config or an image, and none of it may drive
	// the terminal.
	stdout, stderr *termtext.Writer
	// rawStdout is stdout as given, for bytes meant for a program
	// (report --json into a pipe), and stdoutTerminal says it is a
	// terminal, where they are escaped all the same.
	rawStdout      io.Writer
	stdoutTerminal bool
	// stderrFile is stderr when it is a file, for the progress bars, which
	// draw with control characters of their own.
	stderrFile *os.File
	getenv     func(string) string
}

// command is one entry of the command table, the one place that lists
// what nixpi understands: run dispatches on it, and usage, help and the
// shell completion scripts are made from it.
type command struct {
	summary string
	run     func(c *cli, args []string) int
	// flags returns the command's flags (nil: none), the same FlagSet run
	// parses, so completion offers exactly what is accepted.
	flags func() *pflag.FlagSet
	// subcommands, when the command has any (eeprom config, config check):
	// the command dispatches on them (runSubcommand), so help and the
	// completion scripts know exactly the subcommands that exist.
	subcommands []subcommand
}

type subcommand struct {
	name  string
	run   func(c *cli, args []string) int
	flags func() *pflag.FlagSet // nil: none
}

// findSubcommand is the subcommand of cmd (in the command table) named name.
func findSubcommand(cmd, name string) (subcommand, bool) {
	for _, sub := range commandTable()[cmd].subcommands {
		if sub.name == name {
			return sub, true
		}
	}
	return subcommand{}, false
}

// subcommandNames lists cmd's subcommands for messages: "init, check or nixos".
func subcommandNames(cmd string) string {
	var names []string
	for _, sub := range commandTable()[cmd].subcommands {
		names = append(names, sub.name)
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// commandTable is a function rather than a variable because help and
// completion read the table they are in.
func commandTable() map[string]command {
	return map[string]command{
		"build":   {"write a self-installing card image from a Raspberry Pi OS image", runBuild, func() *pflag.FlagSet { return buildFlags(new(builder.Options), new(bool)) }, nil},
		"flash":   {"write a card image onto an SD card, safely and verified", runFlash, func() *pflag.FlagSet { return flashFlags(new(flash.Options), new(builder.Options)) }, nil},
		"inspect": {"show what is on an image or card (partitions, hook, config, journal)", runInspect, func() *pflag.FlagSet { return inspectFlags(new(bool)) }, nil},
		"config": {"write an example install config (init), check one (check), or show the NixOS files it makes (nixos)", runConfig, nil, []subcommand{
			{"init", (*cli).configInit, nil},
			{"check", (*cli).configCheck, nil},
			{"nixos", (*cli).configNixos, func() *pflag.FlagSet { return configNixosFlags(new(string), new(bool)) }}}},
		"eeprom": {"read or change a Pi 4 bootloader EEPROM image's config", runEeprom, nil, []subcommand{
			{"config", (*cli).eepromConfig, func() *pflag.FlagSet { return eepromConfigFlags(new(eepromConfigArgs)) }},
			{"digest", (*cli).eepromDigest, func() *pflag.FlagSet { return eepromDigestFlags(new(eepromDigestArgs)) }}}},
		"report":       {"print the install journal the Pi wrote to a card", runReport, func() *pflag.FlagSet { return reportFlags(new(bool), new(bool)) }, nil},
		"restore-card": {"make a card the install retired bootable again", runRestoreCard, restoreCardFlags, nil},
		"test":         {"boot a built card under QEMU with a USB disk and check the install (--qemu)", runTest, func() *pflag.FlagSet { return testFlags(new(testArgs)) }, nil},
		"version":      {"print the nixpi version (also: nixpi --version)", runVersion, nil, nil},
		"help":         {"show a command's help: nixpi help COMMAND [SUBCOMMAND]", runHelp, nil, nil},
		"completion":   {"print a shell completion script: nixpi completion bash|zsh|fish", runCompletion, nil, []subcommand{{"bash", completionFor(writeBash), nil}, {"zsh", completionFor(writeZsh), nil}, {"fish", completionFor(writeFish), nil}}},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{ctx: ctx, stdin: stdin, stdout: termtext.NewWriter(stdout), stderr: termtext.NewWriter(stderr), rawStdout: stdout, getenv: getenv}
	if f, ok := stdout.(*os.File); ok {
		c.stdoutTerminal = term.IsTerminal(int(f.Fd()))
	}
	c.stderrFile, _ = stderr.(*os.File)
	code := c.dispatch(args)
	c.stdout.Flush()
	c.stderr.Flush()
	return code
}

func (c *cli) dispatch(args []string) int {
	if len(args) == 0 {
		c.usage(c.stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help":
		c.usage(c.stdout)
		return exitOK
	case "--version":
		return runVersion(c, args[1:])
	}
	cmd, ok := commandTable()[args[0]]
	if !ok {
		fmt.Fprintf(c.stderr, "nixpi: unknown command %q\n", args[0])
		c.usage(c.stderr)
		return exitUsage
	}
	return cmd.run(c, args[1:])
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprintln(w, "usage: nixpi COMMAND [flags]\n\ncommands:")
	table := commandTable()
	for _, name := range slices.Sorted(maps.Keys(table)) {
		fmt.Fprintf(w, "  %-12s %s\n", name, table[name].summary)
	}
	fmt.Fprintln(w, "\nRun 'nixpi help COMMAND' (or 'nixpi COMMAND --help') for a command's flags.")
}

// runHelp is `nixpi help [COMMAND [SUBCOMMAND]]`: the command's --help.
// Anything else after COMMAND, a SUBCOMMAND it does not have included, is
// a usage error, not help for something else.
func runHelp(c *cli, args []string) int {
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "-h" || a == "--help" })
	if len(args) == 0 {
		c.usage(c.stdout)
		return exitOK
	}
	cmd, ok := commandTable()[args[0]]
	if !ok {
		return c.fail(usagef("help: unknown command %q (nixpi help lists them)", args[0]))
	}
	switch {
	case len(args) == 1:
	case len(cmd.subcommands) == 0:
		return c.fail(usagef("help: %s has no subcommands, so %q is not one: run nixpi help %s", args[0], args[1], args[0]))
	case len(args) > 2:
		return c.fail(usagef("help: unexpected %q: run nixpi help %s %s", args[2], args[0], args[1]))
	default:
		if _, ok := findSubcommand(args[0], args[1]); !ok {
			return c.fail(usagef("help: %s has no subcommand %q: it has %s", args[0], args[1], subcommandNames(args[0])))
		}
	}
	return cmd.run(c, append(args[1:], "--help"))
}

// wantsHelp says whether args ask for help, for commands without flags.
func wantsHelp(args []string) bool {
	return slices.Contains(args, "-h") || slices.Contains(args, "--help")
}

// parseFlags parses args with flags; done says the caller returns code at
// once: --help (usage on stdout, exit 0) or a usage error (stderr, exit 2).
func (c *cli) parseFlags(flags *pflag.FlagSet, args []string, usage func(w io.Writer)) (code int, done bool) {
	flags.SetOutput(io.Discard)
	flags.Usage = func() {}
	err := flags.Parse(args)
	switch {
	case errors.Is(err, pflag.ErrHelp):
		usage(c.stdout)
		return exitOK, true
	case err != nil:
		return c.fail(usagef("%s: %v (see nixpi help %s)", flags.Name(), err, flags.Name())), true
	}
	return 0, false
}

// usageError marks an error as the caller's wrong use of flags (exit 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// fail prints err and returns its exit status: 2 for usage errors, 1 otherwise.
func (c *cli) fail(err error) int {
	fmt.Fprintf(c.stderr, "nixpi: %s\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}
