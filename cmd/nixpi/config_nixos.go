package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/configcheck"
	"github.com/nixpi/nixpi/firstboot/inputfile"
	"github.com/nixpi/nixpi/firstboot/nixos"
	"github.com/nixpi/nixpi/firstboot/termtext"
)

// loadConfig reads FILE ("-": standard input) as `config check` and
// `config nixos` do, returning the raw text too, for line numbers.
func (c *cli) loadConfig(path string) (name string, data []byte, err error) {
	if path == "-" {
		data, err = inputfile.ReadAll(c.stdin, "standard input", config.What, config.MaxFileSize)
		if err != nil {
			return "<stdin>", nil, fmt.Errorf("read standard input: %w", err)
		}
		return "<stdin>", data, nil
	}
	data, err = config.ReadFile(path)
	if err != nil {
		return path, nil, fmt.Errorf("read config: %w", err)
	}
	return path, data, nil
}

// printProblems prints config problems compiler-style and returns exit 1.
func (c *cli) printProblems(name string, problems config.Errors, again string) int {
	for _, p := range problems {
		fmt.Fprintln(c.stderr, termtext.Line(p.Error()))
	}
	fmt.Fprintf(c.stderr, "nixpi: %s: %d problem(s); fix them and run `%s` again\n", name, len(problems), again)
	return exitFailure
}

// checkConfig reads FILE and runs the one config check (configcheck, as
// build and the Pi do), with nix-instantiate when PATH has it. When ok is
// false the command exits with code: the problems, or why FILE could not
// be checked, are printed.
func (c *cli) checkConfig(cmd, path string) (res *configcheck.Result, name string, code int, ok bool) {
	name, data, err := c.loadConfig(path)
	if err != nil {
		return nil, name, c.fail(fmt.Errorf("%s: %w", cmd, err)), false
	}
	res, err = configcheck.Check(c.ctx, name, data, configcheck.FindParser(c.getenv("PATH")))
	var problems config.Errors
	if errors.As(err, &problems) {
		return nil, name, c.printProblems(name, problems, "nixpi "+cmd), false
	}
	if err != nil {
		return nil, name, c.fail(fmt.Errorf("%s: %w", cmd, err)), false
	}
	return res, name, exitOK, true
}

const configNixosUsage = `usage: nixpi config nixos FILE [--out DIR] [--force]

Print the configuration.nix and hardware-configuration.nix the Pi will write
for the config in FILE ("-" reads standard input), or write them into DIR.
What only the Pi knows (its memory) is shown as a comment, and the ids of
the SSD's partitions, which the Pi derives when it partitions the disk, as
placeholders (BOOT-PARTUUID, SWAP-PARTUUID, ROOT-PARTUUID). Secret files the
Pi writes (password hashes, the Wi-Fi key) are named, never shown.

flags:
`

func configNixosFlags(out *string, force *bool) *pflag.FlagSet {
	flags := pflag.NewFlagSet("config nixos", pflag.ContinueOnError)
	flags.StringVar(out, "out", "", "write the files into this directory (created if missing) instead of printing them")
	flags.BoolVar(force, "force", false, "replace files already in DIR")
	return flags
}

func (c *cli) configNixos(args []string) int {
	out, force := new(string), new(bool)
	flags := configNixosFlags(out, force)
	flags.SetOutput(io.Discard)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(c.stdout, configNixosUsage+flags.FlagUsages())
			return exitOK
		}
		return c.configUsage(err.Error())
	}
	if flags.NArg() != 1 {
		return c.configUsage("config nixos needs exactly one FILE")
	}
	if *force && *out == "" {
		return c.configUsage("config nixos: --force only makes sense with --out DIR")
	}
	res, _, code, ok := c.checkConfig("config nixos", flags.Arg(0))
	if !ok {
		return code
	}
	cfg, files := res.Config, res.Files
	if *out == "" {
		for i, f := range files.Configs {
			if i > 0 {
				fmt.Fprintln(c.stdout)
			}
			fmt.Fprintf(c.stdout, "# ---- %s ----\n", f.Path)
			if _, err := c.stdout.Write(f.Data); err != nil {
				return c.fail(fmt.Errorf("config nixos: %w", err))
			}
		}
	} else if err := writeNixosFiles(*out, files.Configs, *force); err != nil {
		return c.fail(fmt.Errorf("config nixos: %w", err))
	} else {
		for _, f := range files.Configs {
			fmt.Fprintf(c.stdout, "wrote %s\n", filepath.Join(*out, filepath.Base(f.Path)))
		}
	}
	if ids := placeholdersIn(files.Configs); len(ids) > 0 {
		fmt.Fprintf(c.stderr, "nixpi: %s in %s stand for the PARTUUIDs the Pi derives when it partitions the SSD; the files it writes name those\n",
			strings.Join(ids, ", "), filepath.Base(nixos.HardwareFile))
	}
	if cfg.NixOS.Flake != "" {
		fmt.Fprintf(c.stderr, "nixpi: nixos.flake is set: the Pi writes only %s; import it from %s\n", nixos.HardwareFile, cfg.NixOS.Flake)
	}
	for _, s := range files.Secrets {
		fmt.Fprintf(c.stderr, "nixpi: the Pi also writes %s (root-only, not shown)\n", s.Path)
	}
	return exitOK
}

// placeholdersIn are the PARTUUID placeholders the files name.
func placeholdersIn(files []nixos.File) []string {
	var ids []string
	for _, id := range nixos.PartUUIDPlaceholders {
		for _, f := range files {
			if bytes.Contains(f.Data, []byte("/dev/disk/by-partuuid/"+id)) {
				ids = append(ids, id)
				break
			}
		}
	}
	return ids
}

// writeNixosFiles writes each file into dir atomically (a temporary file
// renamed into place). Unless force is set it first checks that none exists,
// so a refusal leaves dir as it was.
func writeNixosFiles(dir string, files []nixos.File, force bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !force {
		for _, f := range files {
			target := filepath.Join(dir, filepath.Base(f.Path))
			if _, err := os.Lstat(target); err == nil {
				return fmt.Errorf("%q already exists; pass --force to replace it, or choose another --out", target)
			}
		}
	}
	for _, f := range files {
		target := filepath.Join(dir, filepath.Base(f.Path))
		if err := renameio.WriteFile(target, f.Data, os.FileMode(f.Mode)); err != nil {
			return fmt.Errorf("write %q: %w", target, err)
		}
	}
	return nil
}
