package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/journal"
)

func cmdStatus(args []string, stdout, stderr io.Writer, d deps) int {
	fs := pflag.NewFlagSet("status", pflag.ContinueOnError)
	bootDir := fs.String("boot-dir", "", "where the card's FAT partition is mounted (`DIR`; default /boot/firmware, or /boot on older images)")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return fail(stderr, fmt.Errorf("status: unexpected argument %q", fs.Arg(0)), exitUsage)
	}
	if *bootDir == "" {
		*bootDir = defaultBootDir(d.root)
	}
	dir := filepath.Join(d.root, *bootDir)
	j, err := journal.ReadFile(dir)
	if err != nil {
		return fail(stderr, err, exitFailure)
	}
	fmt.Fprintf(stdout, "journal: %s\n", filepath.Join(*bootDir, cardpath.Journal))
	if err := journal.Print(stdout, j); err != nil {
		return fail(stderr, err, exitFailure)
	}
	if marker, err := os.ReadFile(filepath.Join(dir, cardpath.Failed)); err == nil {
		fmt.Fprintf(stdout, "\n%s:\n%s", filepath.Join(*bootDir, cardpath.Failed), marker)
	}
	return exitOK
}
