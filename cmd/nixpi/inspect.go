package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/termtext"
)

func inspectFlags(asJSON *bool) *pflag.FlagSet {
	flags := pflag.NewFlagSet("inspect", pflag.ContinueOnError)
	flags.BoolVar(asJSON, "json", false, "print JSON instead of text")
	return flags
}

func runInspect(c *cli, args []string) int {
	asJSON := new(bool)
	flags := inspectFlags(asJSON)
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "usage: nixpi inspect IMAGE [--json]")
		fmt.Fprintln(w, "\nShows an image's or card's partitions, boot partition, first-boot hook, nixpi config")
		fmt.Fprintln(w, "(secrets redacted), manifest and, once the card has been in a Pi, its install journal.")
		fmt.Fprintln(w, "Exits 1, saying why, when the image is not a usable card.")
		fmt.Fprintln(w, "\nflags:")
		fmt.Fprint(w, flags.FlagUsages())
	}
	if code, done := c.parseFlags(flags, args, usage); done {
		return code
	}
	if flags.NArg() != 1 {
		return c.fail(usagef("inspect: want exactly one IMAGE (a card image or a card's device, e.g. /dev/sdX), got %d arguments", flags.NArg()))
	}
	if err := checkImageArg(flags.Arg(0)); err != nil {
		return c.fail(fmt.Errorf("inspect: %w", err))
	}
	in, err := builder.Inspect(flags.Arg(0))
	if err != nil {
		return c.fail(fmt.Errorf("inspect: %w", err))
	}
	c.warnReadableSecrets(in)
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(in); err != nil {
			return c.fail(err)
		}
		return c.usableCard(in)
	}
	var out strings.Builder
	printInspection(&out, in)
	if _, err := io.WriteString(c.stdout, out.String()); err != nil {
		return c.fail(fmt.Errorf("inspect: %w", err))
	}
	return c.usableCard(in)
}

// usableCard is inspect's exit status: 1, saying why, when what it showed
// is not a card or image nixpi (or a Pi) can use.
func (c *cli) usableCard(in *builder.Inspection) int {
	problems := append([]string(nil), in.Problems...)
	if in.FAT != nil && in.FAT.ConfigError != "" {
		problems = append(problems, "its nixpi config does not parse: "+in.FAT.ConfigError)
	}
	if len(problems) == 0 {
		return exitOK
	}
	return c.fail(fmt.Errorf("inspect: %s is not a usable card: %s", in.Path, strings.Join(problems, "; ")))
}

// warnReadableSecrets warns when a card image whose config holds a secret
// can be read by others than its owner (a card made before nixpi wrote
// them 0600, or copied without care).
func (c *cli) warnReadableSecrets(in *builder.Inspection) {
	st, err := os.Stat(in.Path)
	if err != nil || !st.Mode().IsRegular() || in.FAT == nil || !in.FAT.CarriesSecrets || st.Mode().Perm()&0o077 == 0 {
		return
	}
	fmt.Fprintf(c.stderr, "nixpi: warning: %s holds a Wi-Fi key or a password hash and is readable by others (mode %04o): chmod 600 %s\n",
		in.Path, st.Mode().Perm(), in.Path)
}

// printInspection renders what inspect found. Each value read from the card
// goes through termtext.Line, so a name, a cmdline.txt or a journal message
// with a line break cannot fake the lines after it.
func printInspection(w io.Writer, in *builder.Inspection) {
	one := termtext.Line
	all := func(names []string) string {
		shown := make([]string, len(names))
		for i, n := range names {
			shown[i] = one(n)
		}
		return strings.Join(shown, " ")
	}
	fmt.Fprintf(w, "image:      %s (%s)\n", one(in.Path), config.Size(in.Size).Approx())
	fmt.Fprintf(w, "partitions: %s", in.Table)
	if in.DiskID != "" {
		fmt.Fprintf(w, ", disk id %s", in.DiskID)
	}
	fmt.Fprintln(w)
	for _, p := range in.Partitions {
		boot := ""
		if p.Bootable {
			boot = " bootable"
		}
		fmt.Fprintf(w, "  %d  %s %-14s start %-10s size %s%s\n", p.Index, p.Type, p.TypeName, config.Size(p.Start).Approx(), config.Size(p.Size).Approx(), boot)
	}
	if f := in.FAT; f != nil {
		fmt.Fprintf(w, "boot partition: label %q, %s, %s free\n", f.Label, config.Size(f.Size).Approx(), config.Size(f.Free).Approx())
		fmt.Fprintf(w, "  files: %s\n", all(f.BootFiles))
		fmt.Fprintf(w, "  cmdline.txt: %s\n", one(f.Cmdline))
		fmt.Fprintf(w, "  first-boot hook: %s\n", yesNo(f.HookPresent, "present", "absent"))
		arm64 := "not set"
		if f.Arm64Line > 0 {
			arm64 = fmt.Sprintf("%s (line %d)", yesNo(f.Arm64, "1", "0"), f.Arm64Line)
		}
		fmt.Fprintf(w, "  config.txt arm_64bit for a Pi 4: %s\n", arm64)
		if f.Retired != nil {
			fmt.Fprintf(w, "  retired by the hand-over: %s (nixpi restore-card undoes it)\n", one(f.Retired.Summary()))
		}
		if len(f.Staged) > 0 {
			fmt.Fprintf(w, "  staged EEPROM update: %s", all(f.Staged))
			if order, ok := eeprom.Lookup([]byte(f.StagedConfig), "BOOT_ORDER"); ok {
				fmt.Fprintf(w, " (BOOT_ORDER=%s)", one(order))
			}
			fmt.Fprintln(w)
		}
		if len(f.NixpiFiles) > 0 {
			fmt.Fprintf(w, "  nixpi files: %s\n", all(f.NixpiFiles))
		}
		if m := f.Manifest; m != nil {
			fmt.Fprintf(w, "manifest: nixpi %s, SOURCE_DATE_EPOCH %d (%s)\n", one(m.NixpiVersion), m.SourceDateEpoch, one(m.EpochFrom))
			fmt.Fprintf(w, "  base:   sha256 %s (%s, %s userland, boot at %s)\n", one(m.Base.SHA256), one(m.Base.Format), one(m.Base.Arch), one(m.Base.BootDir))
			fmt.Fprintf(w, "  config: sha256 %s\n", one(m.Config.SHA256))
			for _, file := range m.Files {
				fmt.Fprintf(w, "  %-24s %9d  sha256 %s\n", one(file.Path), file.Size, one(file.SHA256))
			}
		}
		if f.ConfigError != "" {
			// One problem a line, as config check prints them.
			problems := strings.Split(f.ConfigError, "\n")
			fmt.Fprintf(w, "nixpi config: unreadable: %s\n", one(problems[0]))
			for _, p := range problems[1:] {
				fmt.Fprintf(w, "  %s\n", one(p))
			}
		} else if f.Config != "" {
			fmt.Fprintln(w, "nixpi config (secrets redacted):")
			for _, line := range strings.Split(strings.TrimRight(f.Config, "\n"), "\n") {
				fmt.Fprintf(w, "  %s\n", one(line))
			}
		}
		if j := f.Journal; j != nil {
			fmt.Fprintf(w, "install journal: %d entries over %d boot(s)", j.Entries, j.Boots)
			if j.Skipped > 0 {
				fmt.Fprintf(w, ", %d unreadable line(s)", j.Skipped)
			}
			if j.Newer > 0 {
				fmt.Fprintf(w, ", %d line(s) from a newer nixpi", j.Newer)
			}
			fmt.Fprintln(w, " (nixpi report prints it all)")
			for _, l := range j.TooLong {
				fmt.Fprintf(w, "  %s\n", one(l))
			}
			for _, s := range j.Steps {
				line := fmt.Sprintf("  %-12s %s", one(s.Step), one(s.Event))
				if s.Msg != "" {
					line += "  " + one(s.Msg)
				}
				if s.Hint != "" {
					line += " (hint: " + one(s.Hint) + ")"
				}
				fmt.Fprintln(w, line)
			}
			if j.Last != "" {
				fmt.Fprintf(w, "  last: %s\n", one(j.Last))
			}
		}
	}
	for _, p := range in.Problems {
		fmt.Fprintf(w, "problem: %s\n", one(p))
	}
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}
