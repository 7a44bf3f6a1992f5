package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder/qemu"
	"github.com/nixpi/nixpi/firstboot/config"
)

// testArgs are nixpi test's flags.
type testArgs struct {
	qemu                                             bool
	base, config, cacheDir, mirror, standIn, workDir string
	bootloader                                       string
}

func testFlags(a *testArgs) *pflag.FlagSet {
	flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
	flags.BoolVar(&a.qemu, "qemu", false, "boot the card in qemu-system-aarch64 (the only test there is)")
	flags.StringVar(&a.base, "base", "", "base image to build the card from (default: a Raspberry Pi OS-shaped Debian image, built once and cached)")
	flags.StringVar(&a.config, "config", "", "install config (default: the example that 'nixpi config init' prints)")
	flags.StringVar(&a.cacheDir, "cache-dir", "/var/cache/nixpi", "where the default base image is cached")
	flags.StringVar(&a.mirror, "mirror", "", "Debian mirror for building the default base image (default: http://deb.debian.org/debian)")
	flags.StringVar(&a.standIn, "stand-in", "", "serve this stand-in nixpkgs (testdata/e2e/standin-nixpkgs in nixpi's source) and an empty binary cache to the guest, and pin it in a copy of the config, so the NixOS steps run without internet; without it the guest has no network")
	flags.StringVar(&a.bootloader, "bootloader", "", "directory with Pi 4 bootloader images and recovery.bin (a raspberrypi/rpi-eeprom checkout's firmware-2711/default) to put into the default base, where the eeprom step reads them as from Raspberry Pi OS's rpi-eeprom package")
	flags.StringVar(&a.workDir, "dir", "", "work directory for the card, the SSD and the console logs (default: a new temporary directory, removed when the test passes)")
	return flags
}

func runTest(c *cli, args []string) int {
	var a testArgs
	flags := testFlags(&a)
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "usage: nixpi test --qemu [--base IMAGE] [--config FILE] [--stand-in DIR] [--bootloader DIR] [--dir DIR] [--cache-dir DIR] [--mirror URL]")
		fmt.Fprintln(w, "\nBuilds a card from IMAGE with FILE, boots it in qemu-system-aarch64 with a blank 16 GiB USB")
		fmt.Fprintln(w, "disk as the SSD, and checks that the hook installs the service, that the service prepares")
		fmt.Fprintln(w, "the disk as FILE asks, and that the card's journal records it. Needs root and the")
		fmt.Fprintln(w, "Debian packages qemu-system-arm mtools gdisk fdisk btrfs-progs dosfstools (and mmdebstrap")
		fmt.Fprintln(w, "qemu-user-static for the default base). Takes several minutes. IMAGE's kernel and")
		fmt.Fprintln(w, "initramfs must boot on QEMU's virt machine with the card as a virtio disk.")
		fmt.Fprintln(w, "\nenvironment:")
		fmt.Fprintln(w, "  NIXPI_DEVICE_BINARIES  directory with nixpi-firstboot-linux-arm64 and -arm to use instead of the embedded ones")
		fmt.Fprintln(w, "\nflags:")
		fmt.Fprint(w, flags.FlagUsages())
	}
	if code, done := c.parseFlags(flags, args, usage); done {
		return code
	}
	if flags.NArg() != 0 {
		return c.fail(usagef("test: unexpected argument %q (see nixpi test --help)", flags.Arg(0)))
	}
	if !a.qemu {
		return c.fail(usagef("test: pass --qemu: booting the card under QEMU is the only test (see nixpi test --help)"))
	}
	if a.base == "" && a.bootloader == "" {
		return c.fail(usagef("test: the default base has no Raspberry Pi bootloader images, which the service's eeprom step reads as Raspberry Pi OS's rpi-eeprom package installs them: " +
			"pass --bootloader DIR (a checkout of github.com/raspberrypi/rpi-eeprom: its firmware-2711/default), or --base with a Raspberry Pi OS image"))
	}
	if os.Geteuid() != 0 {
		return c.fail(errors.New("test: needs root: it attaches the SSD image through a loop device and mounts its filesystems to check them (run it with sudo)"))
	}

	dir := a.workDir
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
	cfgPath := a.config
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
		Base: a.base, Bootloader: a.bootloader, CacheDir: a.cacheDir, Mirror: a.mirror, Config: cfgPath, StandIn: a.standIn, Dir: dir, Log: logf,
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
	fmt.Fprintf(c.stdout, "PASS: the card's install under QEMU did what %s asks, and every check passed\n", cfgPath)
	if a.workDir == "" {
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
	if e != nil { // Prepare returns what it made even when it fails
		defer e.Close()
	}
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
