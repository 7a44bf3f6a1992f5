package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/journal"
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
	card, err := readCardJournal(path)
	if err != nil {
		return c.fail(fmt.Errorf("report: %w", err))
	}
	if *raw {
		// As they are for a program reading a pipe; escaped on a terminal,
		// where the card's bytes would drive it.
		out := c.rawStdout
		if c.stdoutTerminal {
			out = c.stdout
		}
		if _, err := out.Write(card.journal); err != nil {
			return c.fail(fmt.Errorf("report: %w", err))
		}
		return exitOK
	}
	j, err := journal.Read(bytes.NewReader(card.journal))
	if err != nil {
		return c.fail(fmt.Errorf("report: %q: %w", path, err))
	}
	// Everything shown comes from the card; c.stdout escapes it, and each
	// journal entry and hand-over value stays on its line (journal).
	var out bytes.Buffer
	fmt.Fprintf(&out, "card: %s, partition %d, %s\n", path, card.partition, cardpath.Journal)
	if err := journal.Print(&out, j); err != nil {
		return c.fail(err)
	}
	if ho := journal.LastHandOver(j); ho != nil {
		fmt.Fprintf(&out, "\n%s\n\nhand-over:\n%s\n", ho.ConfirmLine(), strings.Join(ho.Report(), "\n"))
	}
	if len(card.failed) > 0 {
		fmt.Fprintf(&out, "\n%s:\n%s", cardpath.Failed, card.failed)
	}
	if *showLog {
		fmt.Fprintf(&out, "\n%s:\n%s", cardpath.Log, card.log)
	}
	if _, err := c.stdout.Write(out.Bytes()); err != nil {
		return c.fail(fmt.Errorf("report: %w", err))
	}
	if len(j.Entries) == 0 && j.Skipped > 0 {
		return c.fail(fmt.Errorf("report: %q: no line of %s is a journal entry: the file is damaged or not a nixpi journal", path, cardpath.Journal))
	}
	return exitOK
}

// cardFiles is what the Pi wrote to the card's FAT partition.
type cardFiles struct {
	partition int
	journal   []byte
	log       []byte
	failed    []byte
}

// readCardJournal finds the FAT partition holding nixpi/journal.jsonl in an
// image or on a card, opened read-only so nothing on it changes. It reads
// the partition table and the FAT as inspect does.
func readCardJournal(path string) (*cardFiles, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	table, err := baseimage.ReadTable(f)
	if err != nil {
		return nil, fmt.Errorf("%q: is it a card or card image? %w", path, err)
	}
	if table.GPT {
		return nil, fmt.Errorf("%q has a GPT partition table: a Raspberry Pi OS card has an MBR one", path)
	}
	fatSeen := false
	for _, p := range table.Partitions {
		fs, err := fatfs.OpenReadOnly(f, p.Start, p.Size)
		if err != nil {
			continue
		}
		fatSeen = true
		data, err := fs.ReadFileAtMost(cardpath.Journal, builder.MaxCardFile)
		if errors.Is(err, iofs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%q partition %d: %w", path, p.Index, err)
		}
		card := &cardFiles{partition: p.Index, journal: data}
		card.log, _ = fs.ReadFileAtMost(cardpath.Log, builder.MaxCardFile)
		card.failed, _ = fs.ReadFileAtMost(cardpath.Failed, builder.MaxCardFile)
		return card, nil
	}
	if !fatSeen {
		return nil, fmt.Errorf("%q has no FAT partition: is it a Raspberry Pi card?", path)
	}
	return nil, fmt.Errorf("%q has no %s on its FAT partition: the Pi has not started the install from this card yet", path, cardpath.Journal)
}
