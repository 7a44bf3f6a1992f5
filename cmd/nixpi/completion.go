package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

const completionUsage = `usage: nixpi completion bash|zsh|fish

Prints a shell completion script for nixpi's commands, subcommands and flags
(file names elsewhere). Load it with:

  bash:  source <(nixpi completion bash)      # or save it in /etc/bash_completion.d/nixpi
  zsh:   source <(nixpi completion zsh)       # after compinit
  fish:  nixpi completion fish | source       # or save it in ~/.config/fish/completions/nixpi.fish
`

func runCompletion(c *cli, args []string) int {
	if wantsHelp(args) {
		fmt.Fprint(c.stdout, completionUsage)
		return exitOK
	}
	if len(args) != 1 {
		fmt.Fprintf(c.stderr, "nixpi: completion needs one shell: %s\n%s", subcommandNames("completion"), completionUsage)
		return exitUsage
	}
	shell, ok := findSubcommand("completion", args[0])
	if !ok {
		fmt.Fprintf(c.stderr, "nixpi: completion: unknown shell %q: %s\n%s", args[0], subcommandNames("completion"), completionUsage)
		return exitUsage
	}
	return shell.run(c, nil)
}

// completionFor is the completion subcommand of one shell's writer.
func completionFor(write func(io.Writer, []completionEntry)) func(*cli, []string) int {
	return func(c *cli, args []string) int {
		if wantsHelp(args) {
			fmt.Fprint(c.stdout, completionUsage)
			return exitOK
		}
		write(c.stdout, completionEntries())
		return exitOK
	}
}

// completionEntry is what a script completes for one command: its
// subcommands, and the flags of the command or of each subcommand.
type completionEntry struct {
	name, summary string
	flags         []string // "--base", "-q"
	subs          []completionSub
}

type completionSub struct {
	name  string
	flags []string
}

// completionEntries reads the command table: the scripts are generated, so
// they offer what nixpi accepts and nothing is listed twice.
func completionEntries() []completionEntry {
	table := commandTable()
	var entries []completionEntry
	for _, name := range slices.Sorted(maps.Keys(table)) {
		cmd := table[name]
		e := completionEntry{name: name, summary: cmd.summary, flags: flagWords(cmd.flags)}
		for _, sub := range cmd.subcommands {
			e.subs = append(e.subs, completionSub{sub.name, flagWords(sub.flags)})
		}
		entries = append(entries, e)
	}
	return entries
}

func flagWords(flags func() *pflag.FlagSet) []string {
	words := []string{"--help"}
	if flags == nil {
		return words
	}
	flags().VisitAll(func(f *pflag.Flag) {
		words = append(words, "--"+f.Name)
		if f.Shorthand != "" {
			words = append(words, "-"+f.Shorthand)
		}
	})
	return words
}

func subNames(subs []completionSub) string {
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.name
	}
	return strings.Join(names, " ")
}

func commandNames(entries []completionEntry) string {
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.name
	}
	return strings.Join(names, " ")
}

// writeBash: words at position 1 are commands, at 2 subcommands; a word
// starting with - is a flag of the command (or subcommand); anything else
// falls back to file names (complete -o default).
func writeBash(w io.Writer, entries []completionEntry) {
	fmt.Fprintf(w, `# bash completion for nixpi (nixpi completion bash)
_nixpi() {
	local cur=${COMP_WORDS[COMP_CWORD]} words=""
	COMPREPLY=()
	if [[ $COMP_CWORD -eq 1 ]]; then
		COMPREPLY=($(compgen -W "%s --help --version" -- "$cur"))
		return
	fi
	case "${COMP_WORDS[1]}" in
`, commandNames(entries))
	for _, e := range entries {
		fmt.Fprintf(w, "\t%s)\n", e.name)
		if len(e.subs) == 0 {
			fmt.Fprintf(w, "\t\twords=%q ;;\n", strings.Join(e.flags, " "))
			continue
		}
		fmt.Fprintf(w, "\t\tif [[ $COMP_CWORD -eq 2 ]]; then words=%q; fi\n", subNames(e.subs)+" --help")
		fmt.Fprintf(w, "\t\tcase \"${COMP_WORDS[2]}\" in\n")
		for _, s := range e.subs {
			fmt.Fprintf(w, "\t\t%s) [[ $COMP_CWORD -gt 2 ]] && words=%q ;;\n", s.name, strings.Join(s.flags, " "))
		}
		fmt.Fprintf(w, "\t\tesac ;;\n")
	}
	fmt.Fprint(w, `	esac
	if [[ $cur == -* || ( -n $words && $words != -* ) ]]; then
		COMPREPLY=($(compgen -W "$words" -- "$cur"))
	fi
}
complete -o default -F _nixpi nixpi
`)
}

func writeZsh(w io.Writer, entries []completionEntry) {
	fmt.Fprint(w, `#compdef nixpi
# zsh completion for nixpi (nixpi completion zsh)
_nixpi() {
	local -a cmds flags subs
	if (( CURRENT == 2 )); then
		cmds=(
`)
	for _, e := range entries {
		fmt.Fprintf(w, "\t\t\t%s\n", zshQuote(e.name+":"+e.summary))
	}
	fmt.Fprint(w, `		)
		_describe command cmds
		return
	fi
	case $words[2] in
`)
	for _, e := range entries {
		if len(e.subs) == 0 {
			fmt.Fprintf(w, "\t%s) flags=(%s) ;;\n", e.name, strings.Join(e.flags, " "))
			continue
		}
		fmt.Fprintf(w, "\t%s)\n\t\tsubs=(%s)\n\t\tcase $words[3] in\n", e.name, subNames(e.subs))
		for _, s := range e.subs {
			fmt.Fprintf(w, "\t\t%s) flags=(%s) ;;\n", s.name, strings.Join(s.flags, " "))
		}
		fmt.Fprint(w, "\t\tesac ;;\n")
	}
	fmt.Fprint(w, `	esac
	if (( CURRENT == 3 )) && (( ${#subs} )); then
		compadd -- $subs
	elif [[ $PREFIX == -* ]]; then
		compadd -- $flags
	else
		_files
	fi
}
if (( $+functions[compdef] )); then
	compdef _nixpi nixpi
fi
`)
}

func writeFish(w io.Writer, entries []completionEntry) {
	fmt.Fprint(w, `# fish completion for nixpi (nixpi completion fish)
# __nixpi_at CMD [SUB]: the command line so far is "nixpi CMD [SUB] ...".
function __nixpi_at
	set -l t (commandline -opc)
	test (count $t) -ge 2; and test "$t[2]" = $argv[1]; or return 1
	if set -q argv[2]
		test (count $t) -ge 3; and test "$t[3]" = $argv[2]
	end
end
# __nixpi_needs_sub CMD: the command line so far is exactly "nixpi CMD".
function __nixpi_needs_sub
	set -l t (commandline -opc)
	test (count $t) -eq 2; and test "$t[2]" = $argv[1]
end
complete -c nixpi -n __fish_use_subcommand -l help -d 'show help'
complete -c nixpi -n __fish_use_subcommand -l version -d 'print the version'
`)
	for _, e := range entries {
		fmt.Fprintf(w, "complete -c nixpi -f -n __fish_use_subcommand -a %s -d %s\n", e.name, fishQuote(e.summary))
		if len(e.subs) == 0 {
			writeFishFlags(w, "__nixpi_at "+e.name, e.flags)
			continue
		}
		for _, sub := range e.subs {
			fmt.Fprintf(w, "complete -c nixpi -f -n %s -a %s\n", fishQuote("__nixpi_needs_sub "+e.name), sub.name)
			writeFishFlags(w, "__nixpi_at "+e.name+" "+sub.name, sub.flags)
		}
	}
}

func writeFishFlags(w io.Writer, condition string, flags []string) {
	for _, f := range flags {
		if name, ok := strings.CutPrefix(f, "--"); ok {
			fmt.Fprintf(w, "complete -c nixpi -n %s -l %s\n", fishQuote(condition), name)
		} else {
			fmt.Fprintf(w, "complete -c nixpi -n %s -s %s\n", fishQuote(condition), strings.TrimPrefix(f, "-"))
		}
	}
}

func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
func fishQuote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}
