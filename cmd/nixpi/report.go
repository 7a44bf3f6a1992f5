package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/firstboot/engine"
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
		c.stdout.Write(card.journal)
		return exitOK
	}
	j, err := journal.Read(bytes.NewReader(card.journal))
	if err != nil {
		return c.fail(fmt.Errorf("report: %q: %w", path, err))
	}
	// Everything shown comes from the card: rendered whole, then printed
	// with its control characters escaped.
	var out bytes.Buffer
	fmt.Fprintf(&out, "card: %s, partition %d, %s/%s\n", path, card.partition, journal.Dir, journal.JournalFile)
	if err := journal.Print(&out, j); err != nil {
		return c.fail(err)
	}
	if len(card.failed) > 0 {
		fmt.Fprintf(&out, "\n%s/%s:\n%s", journal.Dir, engine.FailedMarker, card.failed)
	}
	if *showLog {
		fmt.Fprintf(&out, "\n%s/%s:\n%s", journal.Dir, journal.LogFile, card.log)
	}
	if _, err := io.WriteString(c.stdout, escapeControl(out.String())); err != nil {
		return c.fail(fmt.Errorf("report: %w", err))
	}
	if len(j.Entries) == 0 && j.Skipped > 0 {
		return c.fail(fmt.Errorf("report: %q: no line of %s/%s is a journal entry: the file is damaged or not a nixpi journal", path, journal.Dir, journal.JournalFile))
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
		data, err := readFATFile(fs, "/"+journal.Dir+"/"+journal.JournalFile)
		if err != nil {
			continue
		}
		card := &cardFiles{partition: i + 1, journal: data}
		card.log, _ = readFATFile(fs, "/"+journal.Dir+"/"+journal.LogFile)
		card.failed, _ = readFATFile(fs, "/"+journal.Dir+"/"+engine.FailedMarker)
		return card, nil
	}
	if !fatSeen {
		return nil, fmt.Errorf("%q has no FAT partition: is it a Raspberry Pi card?", path)
	}
	return nil, fmt.Errorf("%q has no %s/%s on its FAT partition: the Pi has not started the install from this card yet", path, journal.Dir, journal.JournalFile)
}

func readFATFile(fs filesystem.FileSystem, name string) ([]byte, error) {
	f, err := fs.OpenFile(name, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
