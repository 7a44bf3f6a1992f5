package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/spf13/pflag"

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
	if ho := journal.LastHandOver(j); ho != nil {
		fmt.Fprintf(c.stdout, "\nhand-over:\n%s\n", strings.Join(ho.Report(), "\n"))
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
// image or on a card, opened read-only so nothing on it changes.
func readCardJournal(path string) (*cardFiles, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", path, err)
	}
	defer d.Close()
	table, err := d.GetPartitionTable()
	if err != nil {
		return nil, fmt.Errorf("%q has no partition table: is it a card or card image? %w", path, err)
	}
	fatSeen := false
	for i := range table.GetPartitions() {
		fs, err := d.GetFilesystem(i + 1)
		if err != nil || (fs.Type() != filesystem.TypeFat32 && fs.Type() != filesystem.TypeFat16) {
			continue
		}
		fatSeen = true
		data, err := readFATFile(fs, "/"+cardpath.Journal)
		if err != nil {
			continue
		}
		card := &cardFiles{partition: i + 1, journal: data}
		card.log, _ = readFATFile(fs, "/"+cardpath.Log)
		card.failed, _ = readFATFile(fs, "/"+cardpath.Failed)
		return card, nil
	}
	if !fatSeen {
		return nil, fmt.Errorf("%q has no FAT partition: is it a Raspberry Pi card?", path)
	}
	return nil, fmt.Errorf("%q has no %s on its FAT partition: the Pi has not started the install from this card yet", path, cardpath.Journal)
}

func readFATFile(fs filesystem.FileSystem, name string) ([]byte, error) {
	f, err := fs.OpenFile(name, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
