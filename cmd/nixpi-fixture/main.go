// Command nixpi-fixture writes a small Raspberry Pi OS-shaped image for
// tests, benchmarks and `make demo`, in seconds and without network.
//
//	nixpi-fixture --layout trixie --arch arm64 --out FILE [--fill SIZE]
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nixpi/nixpi/builder/fixture"
	"github.com/spf13/pflag"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	flags := pflag.NewFlagSet("nixpi-fixture", pflag.ContinueOnError)
	flags.SetOutput(stderr)
	layout := flags.String("layout", string(fixture.LayoutTrixie), "image layout: bookworm, trixie or bullseye")
	arch := flags.String("arch", string(fixture.ArchArm64), "userland architecture: arm64 or armhf")
	table := flags.String("table", string(fixture.TableMBR), "partition table: mbr (like Raspberry Pi OS) or gpt (negative tests)")
	out := flags.String("out", "", "image file to write (replaced)")
	fill := flags.String("fill", "0", "extra realistic content in the root filesystem, e.g. 1GiB")
	fatSize := flags.String("fat-size", "512MiB", "size of the FAT partition")
	epoch := flags.Int64("epoch", fixture.DefaultEpoch.Unix(), "time of every file, in Unix seconds")
	quiet := flags.BoolP("quiet", "q", false, "print nothing on success")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: nixpi-fixture --out FILE [--layout trixie|bookworm|bullseye] [--arch arm64|armhf] [--fill SIZE]")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "nixpi-fixture: %v\n", err)
		return exitUsage
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "nixpi-fixture: "+format+"\n", a...)
		flags.Usage()
		return exitUsage
	}
	if flags.NArg() > 0 {
		return usage("unexpected argument %q", flags.Arg(0))
	}
	if *out == "" {
		return usage("--out is required")
	}
	fillBytes, err := parseSize(*fill)
	if err != nil {
		return usage("--fill: %v", err)
	}
	fatBytes, err := parseSize(*fatSize)
	if err != nil {
		return usage("--fat-size: %v", err)
	}
	start := time.Now()
	img, err := fixture.WriteContext(ctx, *out, fixture.Options{
		Layout:  fixture.Layout(*layout),
		Arch:    fixture.Arch(*arch),
		Table:   fixture.Table(*table),
		FATSize: fatBytes,
		Fill:    fillBytes,
		Epoch:   time.Unix(*epoch, 0).UTC(),
	})
	if err != nil {
		fmt.Fprintf(stderr, "nixpi-fixture: %v\n", err)
		return exitFailure
	}
	if !*quiet {
		fmt.Fprintf(stdout, "%s: %s %s, %d MiB, disk id %08x, written in %.1fs\n",
			img.Path, img.Layout, img.Arch, img.Size>>20, img.DiskID, time.Since(start).Seconds())
	}
	return exitOK
}

// parseSize reads a byte count with an optional IEC unit: 123, 64MiB, 1GiB.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if !strings.HasSuffix(s, u.suffix) {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(s, u.suffix), 10, 64)
		if err != nil || n < 0 || n > (1<<62)/u.mult {
			return 0, fmt.Errorf("bad size %q (want a number of bytes with an optional KiB, MiB or GiB unit)", s)
		}
		return n * u.mult, nil
	}
	return 0, fmt.Errorf("bad size %q", s)
}
