package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder/qemu"
	"github.com/nixpi/nixpi/firstboot/config"
)

func runTest(c *cli, args []string) int {
	flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
	flags.SetOutput(c.stderr)
	useQEMU := flags.Bool("qemu", false, "boot the card in qemu-system-aarch64 (the only test there is)")
	base := flags.String("base", "", "base image to build the card from (default: a Raspberry Pi OS-shaped Debian image, built once and cached)")
	configPath := flags.String("config", "", "install config (default: the example `nixpi config init` prints)")
	cacheDir := flags.String("cache-dir", "/var/cache/nixpi", "where the default base image is cached")
	mirror := flags.String("mirror", "", "Debian mirror for building the default base image (default: http://deb.debian.org/debian)")
	standIn := flags.String("stand-in", "", "serve this stand-in nixpkgs (testdata/e2e/standin-nixpkgs in nixpi's source) and an empty binary cache to the guest, and pin it in a copy of the config, so the NixOS steps run without internet; without it the guest has no network")
	workDir := flags.String("dir", "", "work directory for the card, the SSD and the console logs (default: a new temporary directory, removed when the test passes)")
	flags.Usage = func() {
		fmt.Fprintln(c.stderr, "usage: nixpi test --qemu [--base IMAGE] [--config FILE] [--stand-in DIR] [--dir DIR] [--cache-dir DIR] [--mirror URL]")
		fmt.Fprintln(c.stderr, "\nBuilds a card from IMAGE with FILE, boots it in qemu-system-aarch64 with a blank 16 GiB USB")
		fmt.Fprintln(c.stderr, "disk as the SSD, and checks that the hook installs the service, that the service prepares")
		fmt.Fprintln(c.stderr, "the disk as FILE asks, and that the card's journal records it. Needs root and the")
		fmt.Fprintln(c.stderr, "Debian packages qemu-system-arm mtools gdisk btrfs-progs dosfstools (and mmdebstrap")
		fmt.Fprintln(c.stderr, "qemu-user-static for the default base). Takes several minutes. IMAGE's kernel and")
		fmt.Fprintln(c.stderr, "initramfs must boot on QEMU's virt machine with the card as a virtio disk.")
		fmt.Fprintln(c.stderr, "\nenvironment:")
		fmt.Fprintln(c.stderr, "  NIXPI_DEVICE_BINARIES  directory with nixpi-firstboot-linux-arm64 and -arm to use instead of the embedded ones")
		fmt.Fprintln(c.stderr, "\nflags:")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return c.fail(usagef("test: %v", err))
	}
	if flags.NArg() != 0 {
		return c.fail(usagef("test: unexpected argument %q (see nixpi test --help)", flags.Arg(0)))
	}
	if !*useQEMU {
		return c.fail(usagef("test: pass --qemu: booting the card under QEMU is the only test (see nixpi test --help)"))
	}
	if os.Geteuid() != 0 {
		return c.fail(errors.New("test: needs root: it attaches the SSD image through a loop device and mounts its btrfs to check it (run it with sudo)"))
	}

	dir := *workDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "nixpi-test-")
		if err != nil {
			return c.fail(fmt.Errorf("test: %w", err))
		}
		dir = tmp
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return c.fail(fmt.Errorf("test: %w", err))
	}
	cfgPath := *configPath
	if cfgPath == "" {
		cfgPath = filepath.Join(dir, "nixpi.toml")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return c.fail(fmt.Errorf("test: %w", err))
		}
		if err := os.WriteFile(cfgPath, config.Example(), 0o644); err != nil {
			return c.fail(fmt.Errorf("test: %w", err))
		}
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(c.stderr, "nixpi test: %s %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	commands, err := os.OpenFile(filepath.Join(dir, "commands.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err == nil {
		defer commands.Close()
	}
	opts := qemu.Options{
		Base: *base, CacheDir: *cacheDir, Mirror: *mirror, Config: cfgPath, StandIn: *standIn, Dir: dir, Log: logf,
		CommandLog: func(line string) {
			if commands != nil {
				fmt.Fprintln(commands, line)
			}
		},
	}
	if bins := c.getenv("NIXPI_DEVICE_BINARIES"); bins != "" {
		opts.DeviceBinary = deviceBinariesFrom(bins)
	}

	problems, e, err := testQEMU(c, opts)
	if e != nil {
		fmt.Fprintf(c.stderr, "nixpi test: phase durations:\n%s", e.Summary())
	}
	for _, p := range problems {
		fmt.Fprintf(c.stderr, "nixpi test: FAIL: %s\n", p)
	}
	if err != nil || len(problems) > 0 {
		if err == nil {
			err = fmt.Errorf("%d check(s) failed", len(problems))
		}
		fmt.Fprintf(c.stderr, "nixpi test: consoles, disks and commands.log kept in %s\n", dir)
		return c.fail(fmt.Errorf("test: %w", err))
	}
	fmt.Fprintf(c.stdout, "PASS: the card installed the service and prepared the SSD as %s asks\n", cfgPath)
	if *workDir == "" {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(c.stderr, "nixpi test: consoles, disks and commands.log are in %s\n", dir)
	}
	return exitOK
}

// testQEMU builds the card and runs the hook boot and the uninterrupted
// install with their checks.
func testQEMU(c *cli, opts qemu.Options) (qemu.Problems, *qemu.E2E, error) {
	e, err := qemu.Prepare(c.ctx, opts)
	defer e.Close()
	if err != nil {
		return nil, e, err
	}
	var hb *qemu.HookBoot
	if err := e.Phase("hook boot", func() error {
		var err error
		hb, err = e.RunHookBoot(c.ctx, e.Card)
		return err
	}); err != nil {
		return nil, e, err
	}
	problems := e.CheckHookBoot(c.ctx, hb, e.Inspector.RootFiles)
	if len(problems) > 0 {
		return problems, e, nil
	}
	_, p, err := e.Uninterrupted(c.ctx, hb.Card)
	return append(problems, p...), e, err
}
