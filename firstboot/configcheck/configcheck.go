// Package configcheck is the one check of an install config, wherever it is
// read: `nixpi build` and `flash --base` before a card is written, `config
// check` and `config nixos`, and the Pi before it touches a disk. Beyond
// config.Parse it checks what shows only in the NixOS configuration: a
// release nixpi has no nixpkgs pin for, an extra_module that does not parse
// as Nix, a generated file that does not parse. Each copy of these checks
// used to differ a little, so a card could carry what the Pi then failed on,
// after wiping the SSD.
package configcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/nixos"
)

// Result is a config that passed every check.
type Result struct {
	Config *config.Config
	// Files are what the Pi writes for Config, with the partitions' ids
	// as placeholders (nixos.PartUUIDPlaceholders).
	Files *nixos.Files
	// ModuleParsedBy says what parsed nixos.extra_module (Parser.Name), ""
	// without one.
	ModuleParsedBy string
}

// Check parses the config file data (named name in messages) and checks it
// for the Pi. Problems are a config.Errors, each at name:line; any other
// error means the check itself could not run.
func Check(ctx context.Context, name string, data []byte, nix Parser) (*Result, error) {
	cfg, err := config.Parse(name, data)
	if err != nil {
		return nil, err
	}
	var problems config.Errors
	if _, err := nixos.Nixpkgs(cfg.NixOS); err != nil {
		problems = append(problems, &config.Error{Key: "nixos.release", Msg: err.Error()})
	}
	res := &Result{Config: cfg}
	if m := cfg.NixOS.ExtraModule; m != "" {
		res.ModuleParsedBy = nix.Name()
		se, err := nix.Parse(ctx, m)
		if err != nil {
			return nil, err
		}
		if se != nil {
			// Nothing generated from a module that does not parse would.
			problems = append(problems, &config.Error{Key: "nixos.extra_module", ValueLine: se.Line,
				Msg: fmt.Sprintf("nixos.extra_module does not parse as Nix (line %d, column %d of the module): %s", se.Line, se.Col, se.Msg)})
			return nil, config.AtLines(name, data, problems)
		}
	}
	files, err := nixos.Generate(cfg, nixos.DiskFromLayout(cfg.Layout), nixos.Machine{})
	if err != nil {
		var cerr *config.Error
		if !errors.As(err, &cerr) {
			return nil, err
		}
		return nil, config.AtLines(name, data, append(problems, cerr))
	}
	for _, f := range files.Configs {
		se, err := nix.Parse(ctx, string(f.Data))
		if err != nil {
			return nil, err
		}
		if se != nil {
			problems = append(problems, &config.Error{Key: "nixos", Msg: fmt.Sprintf("the generated %s does not parse (line %d: %s); this is a nixpi bug, please report it with this config", f.Path, se.Line, se.Msg)})
		}
	}
	if len(problems) > 0 {
		return nil, config.AtLines(name, data, problems)
	}
	res.Files = files
	return res, nil
}

// Parser parses Nix text: with nix-instantiate --parse when one was found,
// else with nixpi's own bracket check (nixos.CheckSyntax), which accepts
// much that Nix rejects. The zero Parser is the bracket check.
type Parser struct{ bin string }

// FindParser looks for nix-instantiate in the directories of pathList (a
// PATH value).
func FindParser(pathList string) Parser {
	for _, dir := range filepath.SplitList(pathList) {
		if !filepath.IsAbs(dir) {
			continue // a relative PATH entry would run whatever the working directory holds
		}
		p := filepath.Join(dir, "nix-instantiate")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return Parser{bin: p}
		}
	}
	return Parser{}
}

// ByNix says whether Nix itself parses.
func (p Parser) ByNix() bool { return p.bin != "" }

// Name says what parses, for people.
func (p Parser) Name() string {
	if p.bin == "" {
		return "nixpi's own bracket check only; install Nix to have nix-instantiate --parse it"
	}
	return "nix-instantiate --parse"
}

var nixErrorAtRE = regexp.MustCompile(`at «(?:stdin|string)»:(\d+):(\d+)`)

// Parse returns where and why text does not parse, or nil; an error when
// nix-instantiate could not be run. The text goes in on standard input:
// as an argument a large one (a 200 KB module, the configuration of 1000
// users) exceeds the kernel's limit on one argument, and one that starts
// with "-" would be read as an option.
func (p Parser) Parse(ctx context.Context, text string) (*nixos.SyntaxError, error) {
	if p.bin == "" {
		var se *nixos.SyntaxError
		if err := nixos.CheckSyntax(text); errors.As(err, &se) {
			return se, nil
		}
		return nil, nil
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, p.bin, "--store", "dummy://", "--parse", "-")
	cmd.Stdin, cmd.Stderr = strings.NewReader(text), &stderr
	err := cmd.Run()
	// Nix exits 1 on an error of the text; anything else is nix-instantiate
	// failing.
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil, nil
	case ctx.Err() != nil || !errors.As(err, &exit) || exit.ExitCode() != 1:
		return nil, fmt.Errorf("parse Nix with %q: %w: %s", p.bin, err, firstError(stderr.String()))
	}
	se := &nixos.SyntaxError{Line: 1, Col: 1, Msg: firstError(stderr.String())}
	if m := nixErrorAtRE.FindStringSubmatch(stderr.String()); m != nil {
		se.Line, _ = strconv.Atoi(m[1])
		se.Col, _ = strconv.Atoi(m[2])
	}
	return se, nil
}

// firstError is the first "error: " line nix-instantiate printed (a
// warning may come first), without its prefix.
func firstError(stderr string) string {
	for _, line := range strings.Split(stderr, "\n") {
		if msg, ok := strings.CutPrefix(strings.TrimSpace(line), "error: "); ok {
			return msg
		}
	}
	msg, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
	return msg
}
