package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/internal/inputfile"
)

const configUsage = `usage: nixpi config init
       nixpi config check FILE

init   print a commented example install config (redirect it to a file)
check  check FILE strictly; print a summary, or every problem as FILE:LINE
       (FILE "-" reads standard input)
`

func runConfig(c *cli, args []string) int {
	flags := pflag.NewFlagSet("config", pflag.ContinueOnError)
	flags.SetOutput(io.Discard)
	flags.SetInterspersed(false)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(c.stdout, configUsage)
			return exitOK
		}
		return c.configUsage(err.Error())
	}
	args = flags.Args()
	if len(args) == 0 {
		return c.configUsage("config needs a subcommand")
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "init":
		if wantsHelp(rest) {
			fmt.Fprint(c.stdout, configUsage)
			return exitOK
		}
		if len(rest) != 0 {
			return c.configUsage("config init takes no arguments; redirect its output: nixpi config init > nixpi.toml")
		}
		_, err := c.stdout.Write(config.Example())
		if err != nil {
			return c.fail(fmt.Errorf("config init: %w", err))
		}
		return exitOK
	case "check":
		if wantsHelp(rest) {
			fmt.Fprint(c.stdout, configUsage)
			return exitOK
		}
		if len(rest) != 1 {
			return c.configUsage("config check needs exactly one FILE")
		}
		return c.configCheck(rest[0])
	default:
		return c.configUsage(fmt.Sprintf("unknown config subcommand %q", sub))
	}
}

func (c *cli) configUsage(msg string) int {
	fmt.Fprintf(c.stderr, "nixpi: %s\n%s", msg, configUsage)
	return exitUsage
}

func (c *cli) configCheck(path string) int {
	var (
		cfg *config.Config
		err error
	)
	name := path
	if path == "-" {
		name = "<stdin>"
		data, rerr := inputfile.ReadAll(c.stdin, "standard input", config.What, config.MaxFileSize)
		if rerr != nil {
			return c.fail(fmt.Errorf("config check: %w", rerr))
		}
		cfg, err = config.Parse(name, data)
	} else {
		cfg, err = config.Load(path)
	}
	var problems config.Errors
	if errors.As(err, &problems) {
		// Compiler-style lines, one per problem, so editors can jump to them.
		for _, p := range problems {
			fmt.Fprintln(c.stderr, escapeControl(p.Error()))
		}
		fmt.Fprintf(c.stderr, "nixpi: %s: %d problem(s); fix them and run `nixpi config check` again\n", name, len(problems))
		return exitFailure
	}
	if err != nil {
		return c.fail(fmt.Errorf("config check: %w", err))
	}
	fmt.Fprintf(c.stdout, "%s: ok\n", name)
	for _, line := range cfg.Summary() {
		fmt.Fprintln(c.stdout, "  "+line)
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(c.stderr, "nixpi: warning: "+w)
	}
	return exitOK
}
