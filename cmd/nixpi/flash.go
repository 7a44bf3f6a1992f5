package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/builder/flash"
	"github.com/nixpi/nixpi/builder/source"
	"github.com/nixpi/nixpi/firstboot/config"
)

func flashFlags(opts *flash.Options, build *builder.Options) *pflag.FlagSet {
	flags := pflag.NewFlagSet("flash", pflag.ContinueOnError)
	flags.StringVar(&build.Base, "base", "", "build the card from this Raspberry Pi OS image (as nixpi build --base) straight onto DEVICE, in one pass with no image on disk; no IMAGE then")
	flags.StringVar(&build.Config, "config", "", "with --base: the install config (nixpi.toml)")
	flags.BoolVar(&opts.Yes, "yes", false, "do not ask for the device name to be typed back")
	flags.BoolVar(&opts.AllowNonRemovable, "allow-non-removable", false, "accept a disk that is neither removable nor on USB/MMC (a loop device)")
	flags.BoolVar(&opts.NoVerify, "no-verify", false, "skip reading the card back and comparing it with the image")
	flags.BoolVar(&opts.Unmount, "unmount", false, "unmount the card's mounted partitions (after the confirmation) instead of refusing it")
	flags.BoolVar(&opts.NoDiscard, "no-discard", false, "do not tell the card that the image's unused blocks are free")
	flags.StringVar(&opts.SHA256, "sha256", "", "expected sha256 of IMAGE (or of --base) as given (default: the sidecar .sha256 when present)")
	return flags
}

func runFlash(c *cli, args []string) int {
	var opts flash.Options
	var build builder.Options
	flags := flashFlags(&opts, &build)
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "usage: nixpi flash IMAGE DEVICE [--yes] [--sha256 HEX] [--no-verify] [--no-discard] [--unmount] [--allow-non-removable]")
		fmt.Fprintln(w, "       nixpi flash --base SRC --config nixpi.toml DEVICE [flags]")
		fmt.Fprintln(w, "\nWrites the card image IMAGE (from nixpi build; a path or URL, raw or compressed) onto the whole")
		fmt.Fprintln(w, "disk DEVICE, e.g. /dev/sdb or")
		fmt.Fprintln(w, "/dev/mmcblk0: only the blocks IMAGE.bmap (or the image's data) maps, then reads them back and")
		fmt.Fprintln(w, "compares. Refuses a partition, a mounted or busy disk, one smaller than IMAGE, and a disk that")
		fmt.Fprintln(w, "is not removable or on USB/MMC; asks for DEVICE's name to be typed back.")
		fmt.Fprintln(w, "\nflags:")
		fmt.Fprint(w, flags.FlagUsages())
	}
	if code, done := c.parseFlags(flags, args, usage); done {
		return code
	}
	switch {
	case build.Base != "" && (flags.NArg() != 1 || build.Config == ""):
		return c.fail(usagef("flash: with --base, pass --config and only DEVICE (e.g. nixpi flash --base os.img.xz --config nixpi.toml /dev/sdb)"))
	case build.Base == "" && build.Config != "":
		return c.fail(usagef("flash: --config goes with --base; to flash a built IMAGE pass IMAGE DEVICE"))
	case build.Base == "" && flags.NArg() != 2:
		return c.fail(usagef("flash: want IMAGE and DEVICE (e.g. nixpi flash card.img /dev/sdb), got %d arguments", flags.NArg()))
	}
	opts.Device = flags.Arg(flags.NArg() - 1)
	if build.Base == "" {
		opts.Image = flags.Arg(0)
	}
	in := bufio.NewReader(c.stdin)
	opts.Confirm = func(description, name string) (string, error) {
		fmt.Fprintf(c.stderr, "%sEverything on it will be lost. Type %s to write the card onto it: ", description, name)
		line, err := in.ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("nothing typed (%v)", err)
		}
		return strings.TrimSpace(line), nil
	}
	opts.Log = func(msg string) { fmt.Fprintln(c.stderr, "nixpi flash:", msg) }
	opts.TempDir = c.getenv("TMPDIR")
	if f := c.stderrFile; f != nil {
		build.Progress = source.TerminalProgress(f, "building onto the card")
		bars := map[string]func(int64, int64){}
		for _, phase := range []string{"write", "verify"} {
			bars[phase] = source.TerminalProgress(f, phase)
		}
		if bars["write"] != nil {
			opts.Progress = func(phase string, done, total int64) { bars[phase](done, total) }
		}
	}
	var res *flash.Result
	var err error
	if build.Base == "" {
		res, err = flash.Write(c.ctx, opts)
	} else {
		if err := buildEnvironment(c, &build); err != nil {
			return c.fail(fmt.Errorf("flash: %w", err))
		}
		build.SHA256, opts.SHA256 = opts.SHA256, ""
		build.Log = func(msg string) { fmt.Fprintln(c.stderr, "nixpi flash: build:", msg) }
		build.Warn = func(msg string) { fmt.Fprintln(c.stderr, "nixpi flash: warning:", msg) }
		_, res, err = flash.Build(c.ctx, build, opts)
	}
	if err != nil {
		if errors.Is(err, flash.ErrCardIncomplete) {
			return c.fail(fmt.Errorf("flash: %s: %w", opts.Device, err))
		}
		if c.ctx.Err() != nil {
			return c.fail(fmt.Errorf("flash: interrupted before writing: %s was not changed", opts.Device))
		}
		return c.fail(fmt.Errorf("flash: %w", err))
	}
	verified := "not verified (--no-verify)"
	if res.Verified {
		verified = fmt.Sprintf("verified in %.1fs (%s)", res.Verify.Seconds(), rate(res.Written, res.Verify.Seconds()))
	}
	discarded := ""
	if res.Discarded > 0 {
		discarded = fmt.Sprintf(", discarded %s", config.Size(res.Discarded).Approx())
	}
	fmt.Fprintf(c.stdout, "%s: wrote %s in %d ranges in %.1fs (%s)%s, %s\n", res.Disk.Path, config.Size(res.Written).Approx(), res.Ranges, res.Write.Seconds(), rate(res.Written, res.Write.Seconds()), discarded, verified)
	return exitOK
}

func rate(bytes int64, seconds float64) string {
	if seconds <= 0 {
		return "-"
	}
	return config.Size(int64(float64(bytes)/seconds)).Approx() + "/s"
}
