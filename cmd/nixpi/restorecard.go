package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/cardpath"
)

func runRestoreCard(c *cli, args []string) int {
	flags := pflag.NewFlagSet("restore-card", pflag.ContinueOnError)
	flags.SetOutput(c.stderr)
	flags.Usage = func() {
		fmt.Fprintln(c.stderr, "usage: nixpi restore-card IMAGE|DEVICE")
		fmt.Fprintln(c.stderr, "\nMakes a card the install retired bootable again: moves the boot files back from")
		fmt.Fprintf(c.stderr, "%s/ to the FAT's root as %s lists them and deletes the staged EEPROM\n", cardpath.Retired, cardpath.RetiredManifest)
		fmt.Fprintln(c.stderr, "update; the install journal stays. Refuses a card nixpi did not retire, and a mounted one.")
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return c.fail(usagef("restore-card: %v", err))
	}
	if flags.NArg() != 1 {
		return c.fail(usagef("restore-card: want exactly one IMAGE or DEVICE (e.g. /dev/sdX for the card), got %d arguments", flags.NArg()))
	}
	path := flags.Arg(0)
	r, err := builder.RestoreCard(path)
	if err != nil {
		return c.fail(fmt.Errorf("restore-card: %w", err))
	}
	fmt.Fprintf(c.stdout, "%s: %d boot files back at the root from %s/", path, len(r.Moved), cardpath.Retired)
	if len(r.Removed) > 0 {
		fmt.Fprintf(c.stdout, "; removed the staged EEPROM update (%s)", strings.Join(r.Removed, " "))
	}
	fmt.Fprintln(c.stdout)
	fmt.Fprintf(c.stdout, "the card boots Raspberry Pi OS again; the Pi's bootloader keeps BOOT_ORDER %s, so with this card in it boots the card first when the order tries SD first.\n", r.Manifest.BootOrder)
	return exitOK
}
