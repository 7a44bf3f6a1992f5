package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/firstboot/config"
)

const configUsage = `usage: nixpi config init
       nixpi config check FILE
       nixpi config nixos FILE [--out DIR] [--force]

init   print a commented example install config (redirect it to a file)
check  check FILE strictly; print a summary, or every problem as FILE:LINE
       (FILE "-" reads standard input)
nixos  print (or write into DIR) the configuration.nix and
       hardware-configuration.nix the Pi will write for FILE
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
	sub, ok := findSubcommand("config", args[0])
	if !ok {
		return c.configUsage(fmt.Sprintf("unknown config subcommand %q (it has %s)", args[0], subcommandNames("config")))
	}
	return sub.run(c, args[1:])
}

func (c *cli) configInit(args []string) int {
	if wantsHelp(args) {
		fmt.Fprint(c.stdout, configUsage)
		return exitOK
	}
	if len(args) != 0 {
		return c.configUsage("config init takes no arguments; redirect its output: nixpi config init > nixpi.toml")
	}
	if _, err := c.stdout.Write(config.Example()); err != nil {
		return c.fail(fmt.Errorf("config init: %w", err))
	}
	return exitOK
}

func (c *cli) configUsage(msg string) int {
	fmt.Fprintf(c.stderr, "nixpi: %s\n%s", msg, configUsage)
	return exitUsage
}

func (c *cli) configCheck(args []string) int {
	// Flags parsed, though check has none but --help, so that `--` lets
	// FILE start with "-".
	flags := pflag.NewFlagSet("config check", pflag.ContinueOnError)
	flags.SetOutput(io.Discard)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(c.stdout, configUsage)
			return exitOK
		}
		return c.configUsage(err.Error())
	}
	if flags.NArg() != 1 {
		return c.configUsage("config check needs exactly one FILE")
	}
	res, name, code, ok := c.checkConfig("config check", flags.Arg(0))
	if !ok {
		return code
	}
	fmt.Fprintf(c.stdout, "%s: ok\n", name)
	for _, line := range res.Config.Summary() {
		fmt.Fprintln(c.stdout, "  "+line)
	}
	if res.ModuleParsedBy != "" {
		fmt.Fprintf(c.stdout, "  extra_module parses (%s)\n", res.ModuleParsedBy)
	}
	for _, w := range res.Config.Warnings() {
		fmt.Fprintln(c.stderr, "nixpi: warning: "+w)
	}
	return exitOK
}
