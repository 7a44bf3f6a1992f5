package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/renameio/v2"
	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/inputfile"
	"github.com/nixpi/nixpi/firstboot/nixos"
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
		fmt.Fprintln(c.stderr, escapeControl(p.Error()))
	}
	fmt.Fprintf(c.stderr, "nixpi: %s: %d problem(s); fix them and run `%s` again\n", name, len(problems), again)
	return exitFailure
}

// nixParser parses Nix text with nix-instantiate when it is on PATH.
type nixParser struct{ bin string }

func (c *cli) nixParser() nixParser {
	for _, dir := range filepath.SplitList(c.getenv("PATH")) {
		p := filepath.Join(dir, "nix-instantiate")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return nixParser{bin: p}
		}
	}
	return nixParser{}
}

var nixErrorAtRE = regexp.MustCompile(`at «string»:(\d+):(\d+)`)

// parse returns where and why text does not parse, or nil.
func (n nixParser) parse(ctx context.Context, text string) *nixos.SyntaxError {
	if n.bin == "" {
		var se *nixos.SyntaxError
		if err := nixos.CheckSyntax(text); errors.As(err, &se) {
			return se
		}
		return nil
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, n.bin, "--store", "dummy://", "--parse", "-E", text)
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err == nil {
		return nil
	}
	msg, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
	se := &nixos.SyntaxError{Line: 1, Col: 1, Msg: strings.TrimPrefix(msg, "error: ")}
	if m := nixErrorAtRE.FindStringSubmatch(stderr.String()); m != nil {
		se.Line, _ = strconv.Atoi(m[1])
		se.Col, _ = strconv.Atoi(m[2])
	}
	return se
}

func (n nixParser) name() string {
	if n.bin == "" {
		return "nixpi's own bracket check only; install Nix to have nix-instantiate --parse it"
	}
	return "nix-instantiate --parse"
}

// nixosProblems are the problems of cfg that show in the NixOS
// configuration rather than in the TOML: an unpinned release, an
// extra_module that does not parse, a generated file that does not parse.
func (c *cli) nixosProblems(name string, data []byte, cfg *config.Config, parser nixParser) (config.Errors, *nixos.Files) {
	var errs config.Errors
	if _, err := nixos.Nixpkgs(cfg.NixOS); err != nil {
		errs = append(errs, &config.Error{Key: "nixos.release", Msg: err.Error()})
	}
	if m := cfg.NixOS.ExtraModule; m != "" {
		if se := parser.parse(c.ctx, m); se != nil {
			e := &config.Error{Key: "nixos.extra_module", Msg: fmt.Sprintf("nixos.extra_module does not parse as Nix (line %d, column %d of the module): %s", se.Line, se.Col, se.Msg)}
			errs = append(errs, e)
			errs = config.AtLines(name, data, errs)
			if start := config.ValueStartLine(data, "nixos.extra_module"); start > 0 {
				e.Line = start + se.Line - 1
			}
			return errs, nil
		}
	}
	files, err := nixos.Generate(cfg, nixos.DiskFromLayout(cfg.Layout), nixos.Machine{})
	if err != nil {
		var cerr *config.Error
		if !errors.As(err, &cerr) {
			cerr = &config.Error{Msg: err.Error()}
		}
		errs = append(errs, cerr)
		return config.AtLines(name, data, errs), nil
	}
	for _, f := range files.Configs {
		if se := parser.parse(c.ctx, string(f.Data)); se != nil {
			errs = append(errs, &config.Error{Key: "nixos", Msg: fmt.Sprintf("the generated %s does not parse (line %d: %s); this is a nixpi bug, please report it with this config", f.Path, se.Line, se.Msg)})
		}
	}
	return config.AtLines(name, data, errs), files
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

func (c *cli) configNixos(args []string) int {
	flags := pflag.NewFlagSet("config nixos", pflag.ContinueOnError)
	flags.SetOutput(io.Discard)
	out := flags.String("out", "", "write the files into `DIR` (created if missing) instead of printing them")
	force := flags.Bool("force", false, "replace files already in DIR")
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
	name, data, err := c.loadConfig(flags.Arg(0))
	if err != nil {
		return c.fail(fmt.Errorf("config nixos: %w", err))
	}
	cfg, err := config.Parse(name, data)
	var problems config.Errors
	if errors.As(err, &problems) {
		return c.printProblems(name, problems, "nixpi config nixos")
	}
	if err != nil {
		return c.fail(fmt.Errorf("config nixos: %w", err))
	}
	problems, files := c.nixosProblems(name, data, cfg, c.nixParser())
	if len(problems) > 0 {
		return c.printProblems(name, problems, "nixpi config nixos")
	}
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
