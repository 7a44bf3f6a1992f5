package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/journal"
)

func runReport(c *cli, args []string) int {
	flags := pflag.NewFlagSet("report", pflag.ContinueOnError)
	flags.SetOutput(c.stderr)
	showLog := flags.Bool("log", false, "also print nixpi/install.log (every command the Pi ran)")
	raw := flags.Bool("json", false, "print the journal's JSON lines as they are")
	flags.Usage = func() {
		fmt.Fprintln(c.stderr, "usage: nixpi report IMAGE|DEVICE [--log] [--json]")
		fmt.Fprintln(c.stderr, "\nPrints the install journal a Pi wrote to the card's FAT partition (nixpi/journal.jsonl),")
		fmt.Fprintln(c.stderr, "as nixpi-firstboot status does on the Pi. Opens the image or card read-only.")
		fmt.Fprintln(c.stderr, "\nflags:")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return c.fail(usagef("report: %v", err))
	}
	if flags.NArg() != 1 {
		return c.fail(usagef("report: want exactly one IMAGE or DEVICE (e.g. /dev/sdX for the card), got %d arguments", flags.NArg()))
	}
	path := flags.Arg(0)
	card, err := readCardJournal(path)
	if err != nil {
		return c.fail(fmt.Errorf("report: %w", err))
	}
	if *raw {
		c.stdout.Write(card.journal)
		return exitOK
	}
	j, err := journal.Read(bytes.NewReader(card.journal))
	if err != nil {
		return c.fail(fmt.Errorf("report: %q: %w", path, err))
	}
	fmt.Fprintf(c.stdout, "card: %s, partition %d, %s\n", path, card.partition, cardpath.Journal)
	if err := journal.Print(c.stdout, j); err != nil {
		return c.fail(err)
	}
	if len(card.failed) > 0 {
		fmt.Fprintf(c.stdout, "\n%s:\n%s", cardpath.Failed, card.failed)
	}
	if *showLog {
		fmt.Fprintf(c.stdout, "\n%s:\n%s", cardpath.Log, card.log)
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
		data, err := fs.ReadFile(cardpath.Journal)
		if err != nil {
			continue
		}
		card := &cardFiles{partition: p.Index, journal: data}
		card.log, _ = fs.ReadFile(cardpath.Log)
		card.failed, _ = fs.ReadFile(cardpath.Failed)
		return card, nil
	}
	if !fatSeen {
		return nil, fmt.Errorf("%q has no FAT partition: is it a Raspberry Pi card?", path)
	}
	return nil, fmt.Errorf("%q has no %s on its FAT partition: the Pi has not started the install from this card yet", path, cardpath.Journal)
}
