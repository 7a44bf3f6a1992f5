package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/termtext"
)

func restoreCardFlags() *pflag.FlagSet {
	return pflag.NewFlagSet("restore-card", pflag.ContinueOnError)
}

func runRestoreCard(c *cli, args []string) int {
	flags := restoreCardFlags()
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "usage: nixpi restore-card IMAGE|DEVICE")
		fmt.Fprintln(w, "\nMakes a card the install retired bootable again: moves the boot files back from")
		fmt.Fprintf(w, "%s/ to the FAT's root as %s lists them and deletes the staged EEPROM\n", cardpath.Retired, cardpath.RetiredManifest)
		fmt.Fprintln(w, "update; the install journal stays. Refuses a card nixpi did not retire, one in use (a mounted")
		fmt.Fprintf(w, "partition), and one whose files or %s are not what the retire wrote.\n", cardpath.RetiredManifest)
	}
	if code, done := c.parseFlags(flags, args, usage); done {
		return code
	}
	if flags.NArg() != 1 {
		return c.fail(usagef("restore-card: want exactly one IMAGE or DEVICE (e.g. /dev/sdX for the card), got %d arguments", flags.NArg()))
	}
	path := flags.Arg(0)
	r, err := builder.RestoreCard(path)
	if err != nil {
		return c.fail(fmt.Errorf("restore-card: %w", err))
	}
	// The names and the boot order come from the card's retired.json: one
	// escaped line each (termtext), as every value from a card.
	fmt.Fprintf(c.stdout, "%s: %d boot files back at the root from %s/", termtext.Line(path), len(r.Moved), cardpath.Retired)
	if len(r.Removed) > 0 {
		removed := make([]string, len(r.Removed))
		for i, n := range r.Removed {
			removed[i] = termtext.Line(n)
		}
		fmt.Fprintf(c.stdout, "; removed the staged EEPROM update (%s)", strings.Join(removed, " "))
	}
	fmt.Fprintln(c.stdout)
	fmt.Fprintf(c.stdout, "the card boots Raspberry Pi OS again; the Pi's bootloader keeps BOOT_ORDER %s, so with this card in it boots the card first when the order tries SD first.\n", termtext.Line(r.Manifest.BootOrder))
	return exitOK
}
