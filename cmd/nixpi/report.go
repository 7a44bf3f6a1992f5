package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/termtext"
)

func reportFlags(showLog, raw *bool) *pflag.FlagSet {
	flags := pflag.NewFlagSet("report", pflag.ContinueOnError)
	flags.BoolVar(showLog, "log", false, "also print nixpi/install.log (every command the Pi ran)")
	flags.BoolVar(raw, "json", false, "print the journal's JSON lines as they are")
	return flags
}

func runReport(c *cli, args []string) int {
	showLog, raw := new(bool), new(bool)
	flags := reportFlags(showLog, raw)
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "usage: nixpi report IMAGE|DEVICE [--log] [--json]")
		fmt.Fprintln(w, "\nPrints the install journal a Pi wrote to the card's FAT partition (nixpi/journal.jsonl),")
		fmt.Fprintln(w, "as nixpi-firstboot status does on the Pi. Opens the image or card read-only.")
		fmt.Fprintln(w, "\nflags:")
		fmt.Fprint(w, flags.FlagUsages())
	}
	if code, done := c.parseFlags(flags, args, usage); done {
		return code
	}
	if flags.NArg() != 1 {
		return c.fail(usagef("report: want exactly one IMAGE or DEVICE (e.g. /dev/sdX for the card), got %d arguments", flags.NArg()))
	}
	path := flags.Arg(0)
	if err := checkImageArg(path); err != nil {
		return c.fail(fmt.Errorf("report: %w", err))
	}
	card, err := builder.OpenCard(path)
	if err != nil {
		return c.fail(fmt.Errorf("report: %w", err))
	}
	defer card.Close()
	if _, err := card.NeedFAT(); err != nil {
		return c.fail(fmt.Errorf("report: %w", err))
	}
	if *raw {
		// As they are for a program reading a pipe; escaped on a terminal,
		// where the card's bytes would drive it.
		data, err := card.ReadFile(cardpath.Journal)
		if err != nil {
			return c.fail(fmt.Errorf("report: %w", noJournal(path, err)))
		}
		out := c.rawStdout
		if c.stdoutTerminal {
			out = c.stdout
		}
		if _, err := out.Write(data); err != nil {
			return c.fail(fmt.Errorf("report: %w", err))
		}
		return exitOK
	}
	j, err := card.Journal()
	if err != nil {
		return c.fail(fmt.Errorf("report: %w", noJournal(path, err)))
	}
	// Everything shown comes from the card; c.stdout escapes it, and each
	// journal entry and hand-over value stays on its line (journal).
	var out bytes.Buffer
	fmt.Fprintf(&out, "card: %s, partition %d, %s\n", termtext.Line(path), card.Boot.Index, cardpath.Journal)
	if err := journal.Print(&out, j); err != nil {
		return c.fail(err)
	}
	if ho := journal.LastHandOver(j); ho != nil {
		fmt.Fprintf(&out, "\n%s\n\nhand-over:\n%s\n", ho.ConfirmLine(), strings.Join(ho.Report(), "\n"))
	}
	// A file the Pi wrote is shown whole, after its header, as it is
	// (c.stdout escapes it); one the card lacks or cannot give is said so.
	if failed, err := card.ReadFile(cardpath.Failed); err == nil && len(failed) > 0 {
		fmt.Fprintf(&out, "\n%s:\n%s", cardpath.Failed, failed)
	} else if err != nil && !errors.Is(err, iofs.ErrNotExist) {
		fmt.Fprintf(&out, "\n%s: unreadable: %s\n", cardpath.Failed, termtext.Line(err.Error()))
	}
	if *showLog {
		log, err := card.ReadFile(cardpath.Log)
		if errors.Is(err, iofs.ErrNotExist) {
			fmt.Fprintf(&out, "\n%s: not on the card\n", cardpath.Log)
		} else if err != nil {
			fmt.Fprintf(&out, "\n%s: unreadable: %s\n", cardpath.Log, termtext.Line(err.Error()))
		} else {
			fmt.Fprintf(&out, "\n%s:\n%s", cardpath.Log, log)
		}
	}
	if _, err := c.stdout.Write(out.Bytes()); err != nil {
		return c.fail(fmt.Errorf("report: %w", err))
	}
	if len(j.Entries) == 0 && j.Skipped > 0 {
		return c.fail(fmt.Errorf("report: %q: no line of %s is a journal entry: the file is damaged or not a nixpi journal", path, cardpath.Journal))
	}
	return exitOK
}

// noJournal explains a card without a journal: the Pi has not run the
// install from it.
func noJournal(path string, err error) error {
	if errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("%q has no %s on its FAT partition: the Pi has not started the install from this card yet (boot the Pi with it first)", path, cardpath.Journal)
	}
	return fmt.Errorf("%q: %w", path, err)
}
