package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/assets"
)

// Every command and subcommand in the table answers --help (and -h, and
// nixpi help CMD [SUB]) on stdout with exit 0, nothing on stderr.
func TestHelpEveryCommand(t *testing.T) {
	t.Parallel()
	var invocations [][]string
	for name, cmd := range commandTable() {
		invocations = append(invocations, []string{name, "--help"}, []string{name, "-h"}, []string{"help", name})
		for _, sub := range cmd.subcommands {
			invocations = append(invocations, []string{name, sub.name, "--help"}, []string{"help", name, sub.name})
		}
	}
	invocations = append(invocations, []string{"--help"}, []string{"-h"}, []string{"help"})
	for _, args := range invocations {
		code, stdout, stderr := runCLI(args...)
		if code != exitOK || stderr != "" || !strings.Contains(stdout, "usage: nixpi") {
			t.Errorf("nixpi %s: exit %d, stdout %q, stderr %q; want exit 0 and usage on stdout", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	if code, _, stderr := runCLI("help", "frobnicate"); code != exitUsage || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Errorf("help of an unknown command: exit %d, %q", code, stderr)
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		if code, stdout, _ := runCLI(args...); code != exitOK || stdout != "nixpi "+assets.Version+"\n" {
			t.Errorf("nixpi %s: exit %d, %q", strings.Join(args, " "), code, stdout)
		}
	}
}

// nixpi help takes a COMMAND and, for a command that has them, one of its
// SUBCOMMANDs: anything else is a usage error, not some command's help.
func TestHelpRefusesExtraArguments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "build", "extra"}, `build has no subcommands, so "extra" is not one`},
		{[]string{"help", "config", "frobnicate"}, `config has no subcommand "frobnicate": it has init, check or nixos`},
		{[]string{"help", "config", "nixos", "extra"}, `unexpected "extra"`},
		{[]string{"help", "eeprom", "config", "digest"}, `unexpected "digest"`},
	} {
		code, stdout, stderr := runCLI(tc.args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("nixpi %s: exit %d, stdout %q, stderr %q; want exit 2 saying %q", strings.Join(tc.args, " "), code, stdout, stderr, tc.want)
		}
	}
	for _, args := range [][]string{{"help", "build", "--help"}, {"help", "config", "nixos"}, {"help", "-h", "flash"}} {
		if code, stdout, _ := runCLI(args...); code != exitOK || !strings.Contains(stdout, "usage: nixpi") {
			t.Errorf("nixpi %s: exit %d, want the help", strings.Join(args, " "), code)
		}
	}
	for _, args := range [][]string{{"config", "frobnicate"}, {"eeprom", "frobnicate"}, {"completion", "frobnicate"}} {
		if code, _, stderr := runCLI(args...); code != exitUsage || !strings.Contains(stderr, `"frobnicate"`) {
			t.Errorf("nixpi %s: exit %d, %q; want a usage error", strings.Join(args, " "), code, stderr)
		}
	}
}

// The completion scripts offer what the command table holds, every
// subcommand and flag of it, and the table is what the commands accept:
// each command dispatches its subcommands through it, and each flag the
// table lists for a (sub)command is parsed by it.
func TestCompletionMatchesCommands(t *testing.T) {
	t.Parallel()
	_, bash, _ := runCLI("completion", "bash")
	_, fish, _ := runCLI("completion", "fish")
	flagged := 0
	for name, cmd := range commandTable() {
		type target struct {
			words []string
			flags func() *pflag.FlagSet
		}
		targets := []target{{[]string{name}, cmd.flags}}
		for _, sub := range cmd.subcommands {
			targets = append(targets, target{[]string{name, sub.name}, sub.flags})
			if !strings.Contains(fish, "'__nixpi_needs_sub "+name+"' -a "+sub.name+"\n") {
				t.Errorf("the fish completion does not offer %s %s", name, sub.name)
			}
		}
		for _, tg := range targets {
			if tg.flags == nil {
				continue
			}
			tg.flags().VisitAll(func(f *pflag.Flag) {
				flagged++
				if !strings.Contains(bash, "--"+f.Name) {
					t.Errorf("the bash completion lacks %s --%s", strings.Join(tg.words, " "), f.Name)
				}
				arg := "--" + f.Name
				if f.NoOptDefVal == "" {
					arg += "=x"
				}
				args := append(slices.Clone(tg.words), arg, "--help")
				if code, _, stderr := runCLI(args...); code != exitOK {
					t.Errorf("nixpi %s: exit %d, %q: the command does not take a flag its completion offers", strings.Join(args, " "), code, stderr)
				}
			})
		}
	}
	if flagged < 30 {
		t.Errorf("only %d flags in the command table", flagged)
	}
	if !strings.Contains(bash, "nixos) [[ $COMP_CWORD -gt 2 ]] && words=\"--help --force --out\"") {
		t.Errorf("the bash completion lacks config nixos and its flags:\n%s", bash)
	}
}

// A backtick in a flag's usage is taken by pflag as the argument's name
// ("--config nixpi config init"): none may have one.
func TestFlagUsagesRender(t *testing.T) {
	t.Parallel()
	var sets []*pflag.FlagSet
	for _, cmd := range commandTable() {
		if cmd.flags != nil {
			sets = append(sets, cmd.flags())
		}
		for _, sub := range cmd.subcommands {
			if sub.flags != nil {
				sets = append(sets, sub.flags())
			}
		}
	}
	if len(sets) < 6 {
		t.Fatalf("only %d flag sets in the command table", len(sets))
	}
	for _, fs := range sets {
		fs.VisitAll(func(f *pflag.Flag) {
			if name, _ := pflag.UnquoteUsage(f); strings.Contains(f.Usage, "`") || strings.Contains(name, " ") {
				t.Errorf("%s --%s: usage %q renders as %q", fs.Name(), f.Name, f.Usage, name)
			}
		})
	}
	_, stdout, _ := runCLI("test", "--help")
	if !strings.Contains(stdout, "--config string") {
		t.Errorf("nixpi test --help does not show --config string:\n%s", stdout)
	}
}

// The completion scripts are generated from the command table; bash's
// parses, loads and completes commands, subcommands and flags.
func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, stdout, stderr := runCLI("completion", shell)
		if code != exitOK || stderr != "" || !strings.Contains(stdout, "eeprom") || !strings.Contains(stdout, "sha256") {
			t.Errorf("completion %s: exit %d, stderr %q", shell, code, stderr)
		}
	}
	if code, _, stderr := runCLI("completion", "tcsh"); code != exitUsage || !strings.Contains(stderr, `unknown shell "tcsh"`) {
		t.Errorf("completion tcsh: exit %d, %q", code, stderr)
	}
	// zsh and fish parse theirs (-n: syntax only).
	for _, shell := range []string{"zsh", "fish"} {
		if _, err := exec.LookPath(shell); err != nil {
			t.Logf("%s not installed: its script is not parsed (apt-get install -y %s)", shell, shell)
			continue
		}
		_, script, _ := runCLI("completion", shell)
		path := filepath.Join(t.TempDir(), "nixpi."+shell)
		if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(shell, "-n", path).CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", shell, err, out)
		}
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	_, script, _ := runCLI("completion", "bash")
	path := filepath.Join(t.TempDir(), "nixpi.bash")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	// complete(WORDS...) prints what _nixpi offers for the last word.
	probe := `source "$1"; complete -p nixpi
complete_() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _nixpi; echo "${COMPREPLY[*]}"; }
complete_ nixpi ins
complete_ nixpi eeprom ""
complete_ nixpi eeprom config --s
complete_ nixpi build --ba
complete_ nixpi build card.img
complete_ nixpi config ""
complete_ nixpi config nixos --o
`
	out, err := exec.Command("bash", "-c", probe, "bash", path).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	want := "complete -o default -F _nixpi nixpi\ninspect\nconfig digest --help\n--set\n--base\n\ninit check nixos --help\n--out\n"
	if string(out) != want {
		t.Errorf("bash completion:\n%s\nwant:\n%s", out, want)
	}
}
