package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/eeprom"
)

func runInspect(c *cli, args []string) int {
	flags := pflag.NewFlagSet("inspect", pflag.ContinueOnError)
	flags.SetOutput(c.stderr)
	asJSON := flags.Bool("json", false, "print JSON instead of text")
	flags.Usage = func() {
		fmt.Fprintln(c.stderr, "usage: nixpi inspect IMAGE [--json]")
		fmt.Fprintln(c.stderr, "\nShows an image's or card's partitions, boot partition, first-boot hook, nixpi config")
		fmt.Fprintln(c.stderr, "(secrets redacted), manifest and, once the card has been in a Pi, its install journal.")
		fmt.Fprintln(c.stderr, "\nflags:")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return exitOK
		}
		return c.fail(usagef("inspect: %v", err))
	}
	if flags.NArg() != 1 {
		return c.fail(usagef("inspect: want exactly one IMAGE (a card image or a card's device, e.g. /dev/sdX), got %d arguments", flags.NArg()))
	}
	in, err := builder.Inspect(flags.Arg(0))
	if err != nil {
		return c.fail(fmt.Errorf("inspect: %w", err))
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(in); err != nil {
			return c.fail(err)
		}
		return exitOK
	}
	printInspection(c.stdout, in)
	return exitOK
}

func printInspection(w io.Writer, in *builder.Inspection) {
	fmt.Fprintf(w, "image:      %s (%s)\n", in.Path, config.Size(in.Size).Approx())
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
		fmt.Fprintf(w, "  files: %s\n", strings.Join(f.BootFiles, " "))
		fmt.Fprintf(w, "  cmdline.txt: %s\n", f.Cmdline)
		fmt.Fprintf(w, "  first-boot hook: %s\n", yesNo(f.HookPresent, "present", "absent"))
		arm64 := "not set"
		if f.Arm64Line > 0 {
			arm64 = fmt.Sprintf("%s (line %d)", yesNo(f.Arm64, "1", "0"), f.Arm64Line)
		}
		fmt.Fprintf(w, "  config.txt arm_64bit for a Pi 4: %s\n", arm64)
		if f.Retired != nil {
			fmt.Fprintf(w, "  retired by the hand-over: %s (nixpi restore-card undoes it)\n", f.Retired.Summary())
		}
		if len(f.Staged) > 0 {
			fmt.Fprintf(w, "  staged EEPROM update: %s", strings.Join(f.Staged, " "))
			if order, ok := eeprom.Lookup([]byte(f.StagedConfig), "BOOT_ORDER"); ok {
				fmt.Fprintf(w, " (BOOT_ORDER=%s)", order)
			}
			fmt.Fprintln(w)
		}
		if len(f.NixpiFiles) > 0 {
			fmt.Fprintf(w, "  nixpi files: %s\n", strings.Join(f.NixpiFiles, " "))
		}
		if m := f.Manifest; m != nil {
			fmt.Fprintf(w, "manifest: nixpi %s, SOURCE_DATE_EPOCH %d (%s)\n", m.NixpiVersion, m.SourceDateEpoch, m.EpochFrom)
			fmt.Fprintf(w, "  base:   sha256 %s (%s, %s userland, boot at %s)\n", m.Base.SHA256, m.Base.Format, m.Base.Arch, m.Base.BootDir)
			fmt.Fprintf(w, "  config: sha256 %s\n", m.Config.SHA256)
			for _, file := range m.Files {
				fmt.Fprintf(w, "  %-24s %9d  sha256 %s\n", file.Path, file.Size, file.SHA256)
			}
		}
		if f.ConfigError != "" {
			fmt.Fprintf(w, "nixpi config: unreadable: %s\n", f.ConfigError)
		} else if f.Config != "" {
			fmt.Fprintln(w, "nixpi config (secrets redacted):")
			for _, line := range strings.Split(strings.TrimRight(f.Config, "\n"), "\n") {
				fmt.Fprintf(w, "  %s\n", line)
			}
		}
		if j := f.Journal; j != nil {
			fmt.Fprintf(w, "install journal: %d entries over %d boot(s)", j.Entries, j.Boots)
			if j.Skipped > 0 {
				fmt.Fprintf(w, ", %d unreadable line(s)", j.Skipped)
			}
			fmt.Fprintln(w, " (nixpi report prints it all)")
			for _, s := range j.Steps {
				line := fmt.Sprintf("  %-12s %s", s.Step, s.Event)
				if s.Msg != "" {
					line += "  " + s.Msg
				}
				if s.Hint != "" {
					line += " (hint: " + s.Hint + ")"
				}
				fmt.Fprintln(w, line)
			}
			if j.Last != "" {
				fmt.Fprintf(w, "  last: %s\n", j.Last)
			}
		}
	}
	for _, p := range in.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}
