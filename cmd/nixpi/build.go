package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/assets"
	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/builder/source"
	"github.com/nixpi/nixpi/firstboot/configcheck"
	"github.com/nixpi/nixpi/firstboot/inputfile"
)

func buildFlags(opts *builder.Options, quiet *bool) *pflag.FlagSet {
	flags := pflag.NewFlagSet("build", pflag.ContinueOnError)
	flags.StringVar(&opts.Base, "base", "", "Raspberry Pi OS image: path or http(s) URL; raw, .xz, .gz, .zst or .zip")
	flags.StringVar(&opts.Config, "config", "", "install config (nixpi.toml); 'nixpi config init' writes an example")
	flags.StringVar(&opts.Out, "out", "", "card image to write")
	flags.StringVar(&opts.SHA256, "sha256", "", "expected sha256 of --base (default: the sidecar BASE.sha256 when present)")
	flags.BoolVar(&opts.Force, "force", false, "replace --out if it exists")
	flags.BoolVarP(quiet, "quiet", "q", false, "print only the result (and warnings)")
	return flags
}

func runBuild(c *cli, args []string) int {
	var opts builder.Options
	var quiet bool
	flags := buildFlags(&opts, &quiet)
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "usage: nixpi build --base SRC --config nixpi.toml --out OUT [--sha256 HEX] [--force] [--quiet]")
		fmt.Fprintln(w, "\nWrites OUT, a copy of the Raspberry Pi OS image SRC whose boot partition installs NixOS")
		fmt.Fprintln(w, "onto the Pi's USB SSD on first boot.")
		fmt.Fprintln(w, "\nenvironment:")
		fmt.Fprintln(w, "  SOURCE_DATE_EPOCH      time of every file written (default: the newest file time on the base's boot partition)")
		fmt.Fprintln(w, "  NIXPI_DEVICE_BINARIES  directory with nixpi-firstboot-linux-arm64 and -arm to use instead of the embedded ones")
		fmt.Fprintln(w, "\nflags:")
		fmt.Fprint(w, flags.FlagUsages())
	}
	if code, done := c.parseFlags(flags, args, usage); done {
		return code
	}
	if flags.NArg() != 0 {
		return c.fail(usagef("build: unexpected argument %q: pass the base image with --base", flags.Arg(0)))
	}
	for _, req := range []struct{ name, value string }{{"base", opts.Base}, {"config", opts.Config}, {"out", opts.Out}} {
		if req.value == "" {
			return c.fail(usagef("build: --%s is required (see nixpi build --help)", req.name))
		}
	}
	if err := buildEnvironment(c, &opts); err != nil {
		return c.fail(fmt.Errorf("build: %w", err))
	}
	opts.Warn = func(msg string) { fmt.Fprintln(c.stderr, "nixpi build: warning:", msg) }
	if !quiet {
		opts.Log = func(msg string) { fmt.Fprintln(c.stderr, "nixpi build:", msg) }
		if c.stderrFile != nil {
			opts.Progress = source.TerminalProgress(c.stderrFile, "decompressing base")
		}
	}
	res, err := builder.Build(c.ctx, opts)
	if errors.Is(err, context.Canceled) && c.ctx.Err() != nil {
		return c.fail(fmt.Errorf("build: interrupted: %s was not written and no temporary file is left", opts.Out))
	}
	if err != nil {
		return c.fail(fmt.Errorf("build: %w", err))
	}
	fmt.Fprintf(c.stdout, "%s  %s\n", res.SHA256, res.Out)
	if !quiet {
		private := ""
		if res.Private {
			private = " (mode 0600: it holds a Wi-Fi key or a password hash; keep it to yourself)"
		}
		fmt.Fprintf(c.stderr, "nixpi build: wrote %s%s, %s.sha256 and %s.bmap: flash it to an SD card (nixpi flash %s /dev/sdX), put it in the Pi with the USB SSD attached, and power on\n", res.Out, private, res.Out, res.Out, res.Out)
	}
	return exitOK
}

// buildEnvironment applies SOURCE_DATE_EPOCH, NIXPI_DEVICE_BINARIES and
// the nix-instantiate on PATH to a build (nixpi build, nixpi flash --base).
func buildEnvironment(c *cli, opts *builder.Options) error {
	opts.NixParser = configcheck.FindParser(c.getenv("PATH"))
	if s := c.getenv("SOURCE_DATE_EPOCH"); s != "" {
		secs, err := strconv.ParseInt(s, 10, 64)
		if err != nil || secs < 0 {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a whole number of seconds since 1970; unset it or fix it", s)
		}
		epoch := time.Unix(secs, 0).UTC()
		opts.Epoch = &epoch
	}
	if dir := c.getenv("NIXPI_DEVICE_BINARIES"); dir != "" {
		opts.DeviceBinary = deviceBinariesFrom(dir)
	}
	return nil
}

// maxDeviceBinary bounds a nixpi-firstboot binary read from
// NIXPI_DEVICE_BINARIES: several times the real one.
const maxDeviceBinary = 256 << 20

// deviceBinariesFrom serves device binaries from dir instead of the ones
// embedded at build time (for testing a freshly built nixpi-firstboot).
func deviceBinariesFrom(dir string) func(goarch string) ([]byte, error) {
	return func(goarch string) ([]byte, error) {
		b, err := inputfile.Read(filepath.Join(dir, assets.DeviceBinaryName(goarch)), "a device binary", maxDeviceBinary)
		if err != nil {
			return nil, fmt.Errorf("NIXPI_DEVICE_BINARIES: %w", err)
		}
		return b, nil
	}
}
