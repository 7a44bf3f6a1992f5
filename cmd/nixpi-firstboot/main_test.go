package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/steps"
	"github.com/nixpi/nixpi/firstboot/system"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

// device is a temp root shaped like a Pi 4 running Raspberry Pi OS with the
// card's FAT at /boot/firmware, and the recording runner and machine.
type device struct {
	t       *testing.T
	root    string
	run     *systemtest.Runner
	machine *systemtest.Machine
	hooks   []string // boot dirs the (recording) hook ran for
	// realHook runs firstboot/hook instead of recording.
	realHook bool
	// hookErr is what the recording hook returns.
	hookErr error
	// now is the device's clock; it moves only when the service sleeps, so
	// bounded waits end at once.
	now time.Time
	// mounts records confirm's mounts of the card ("DEV DIR", "umount DIR").
	mounts []string
}

func newDevice(t *testing.T) *device {
	t.Helper()
	d := &device{t: t, root: t.TempDir(), run: &systemtest.Runner{}, machine: &systemtest.Machine{},
		now: time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)}
	d.put("/proc/sys/kernel/random/boot_id", "11111111-2222\n")
	d.put("/proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.5\x00")
	d.put("/proc/meminfo", "MemTotal: 1919140 kB\n")
	d.put("/boot/firmware/config.txt", "[all]\nenable_uart=1\n")
	d.put("/boot/firmware/nixpi/nixpi.toml", string(config.Example()))
	d.put("/usr/bin/vcgencmd", "")
	d.run.On("throttled=0x0\n", "/usr/bin/vcgencmd", "get_throttled")
	d.run.On("2024/05/17 15:30:58\n", "/usr/bin/vcgencmd", "bootloader_version")
	return d
}

func (d *device) put(path, data string) {
	d.t.Helper()
	p := filepath.Join(d.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

func (d *device) cli(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, deps{
		root:    d.root,
		tools:   system.DefaultTools(),
		runner:  d.run,
		machine: d.machine,
		now:     func() time.Time { return d.now },
		sleep: func(ctx context.Context, dt time.Duration) error {
			d.now = d.now.Add(dt)
			return ctx.Err()
		},
		steps: steps.All,
		hook: func(ctx context.Context, root, bootDir string, logf func(string, ...any)) error {
			if d.realHook {
				return runHook(ctx, root, bootDir, logf)
			}
			d.hooks = append(d.hooks, bootDir)
			return d.hookErr
		},
		// The card's FAT is laid out at the mount point already: the test
		// checks that the right partition was asked for.
		mountCard: func(dev, dir string) error {
			d.mounts = append(d.mounts, strings.TrimPrefix(dev, d.root)+" "+strings.TrimPrefix(dir, d.root))
			return nil
		},
		unmountCard: func(dir string) error {
			d.mounts = append(d.mounts, "umount "+strings.TrimPrefix(dir, d.root))
			return nil
		},
	})
	return code, stdout.String(), stderr.String()
}

func (d *device) events() string {
	j, err := journal.ReadFile(filepath.Join(d.root, "/boot/firmware"))
	if err != nil {
		d.t.Fatal(err)
	}
	var parts []string
	for _, e := range j.Entries {
		parts = append(parts, e.Step+":"+string(e.Event))
	}
	return strings.Join(parts, " ")
}

var runArgs = []string{"run", "--config", "/boot/firmware/nixpi/nixpi.toml", "--boot-dir", "/boot/firmware"}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "usage: nixpi-firstboot"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"run"}, "--config and --boot-dir are required"},
		{[]string{"run", "--config", "nixpi.toml", "--boot-dir", "/boot/firmware"}, "must be absolute paths"},
		{append(runArgs, "--only", "preflight,nope"), `unknown step "nope" (steps: preflight,arm64,packages,target,partition,format,mount,network,nix,nixpkgs,configure,system,install,firmware,verify,eeprom,trial,confirm,scrub,retire,done,reboot)`},
		{append(runArgs, "--target", "sda"), `--target "sda": want a device path`},
		{append(runArgs, "extra"), `unexpected argument "extra"`},
		{[]string{"run", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"status", "x"}, `unexpected argument "x"`},
		{[]string{"hook"}, "--boot-dir is required"},
	} {
		code, _, stderr := d.cli(c.args...)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", c.args, code, stderr, c.want)
		}
	}
	if d.events() != "" || len(d.hooks) != 0 {
		t.Errorf("usage errors acted: journal %q, hooks %v", d.events(), d.hooks)
	}
}

func TestNoArgumentsRunsHookFromKernelCommandLine(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.put("/proc/cmdline", "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 rootwait systemd.run=/boot/firmware/nixpi/nixpi-firstboot systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n")
	if code, _, stderr := d.cli(); code != exitOK || len(d.hooks) != 1 || d.hooks[0] != "/boot/firmware" {
		t.Fatalf("exit %d, hooks %v, stderr %q", code, d.hooks, stderr)
	}
	// Another systemd.run= program is not us.
	d.put("/proc/cmdline", "root=/dev/mmcblk0p2 systemd.run=/boot/firstrun.sh\n")
	if code, _, _ := d.cli(); code != exitUsage || len(d.hooks) != 1 {
		t.Fatalf("foreign systemd.run: exit %d, hooks %v", code, d.hooks)
	}
	// Older images mount the FAT at /boot.
	d.put("/proc/cmdline", "systemd.run=/boot/nixpi/nixpi-firstboot\n")
	if code, _, _ := d.cli("hook"); code != exitOK || d.hooks[1] != "/boot" {
		t.Fatalf("hook: exit %d, hooks %v", code, d.hooks)
	}
}

func TestRunOnlyPreflightThenStatus(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.run.On("aarch64\n", "/usr/bin/uname", "-m")
	code, stdout, stderr := d.cli(append(runArgs, "--only", "preflight")...)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if got := d.events(); got != "preflight:start preflight:done" {
		t.Errorf("journal = %q", got)
	}
	for _, want := range []string{"step 1 of 1, preflight: checking the Pi", "ok       memory     1874 MiB of memory, swap ram", "all 1 steps done."} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	log, _ := os.ReadFile(filepath.Join(d.root, "/boot/firmware/nixpi/install.log"))
	if !strings.Contains(string(log), "preflight  done") {
		t.Errorf("install.log:\n%s", log)
	}

	code, stdout, _ = d.cli("status")
	if code != exitOK || !strings.Contains(stdout, "journal: /boot/firmware/nixpi/journal.jsonl") || !strings.Contains(stdout, "preflight  done") {
		t.Errorf("status: exit %d\n%s", code, stdout)
	}

	// format needs partition and packages, neither done: refused, exit 1.
	code, _, stderr = d.cli(append(runArgs, "--only", "format")...)
	if code != exitFailure || !strings.Contains(stderr, "step format needs step partition, which is not done") {
		t.Errorf("--only format: exit %d, %q", code, stderr)
	}
}

func TestRunArm64RebootsThroughMachine(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.run.On("armv7l\n", "/usr/bin/uname", "-m")
	code, stdout, stderr := d.cli(append(runArgs, "--only", "arm64")...)
	if code != exitOK || d.machine.Reboots() != 1 {
		t.Fatalf("exit %d, reboots %d\n%s\n%s", code, d.machine.Reboots(), stdout, stderr)
	}
	if got := d.events(); got != "arm64:start arm64:reboot" {
		t.Errorf("journal = %q", got)
	}
	if !strings.Contains(stdout, "arm64: rebooting to start the 64-bit kernel") {
		t.Errorf("stdout:\n%s", stdout)
	}
}

func TestBadConfigFailsAndStays(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.put("/boot/firmware/nixpi/nixpi.toml", "schema = 1\n[target]\ndisks = \"auto\"\n")
	code, stdout, stderr := d.cli(runArgs...)
	if code != exitFailure || !strings.Contains(stderr, "nixpi.toml:3") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if got := d.events(); got != "config:fail" {
		t.Errorf("journal = %q", got)
	}
	if _, err := os.Stat(filepath.Join(d.root, "/boot/firmware/nixpi/FAILED")); err != nil {
		t.Errorf("no failure marker: %v", err)
	}
	if !strings.Contains(stdout, "INSTALL STOPPED: step config failed in boot 1") {
		t.Errorf("stdout:\n%s", stdout)
	}
	// Next boot, nothing changed: the same report, nothing run.
	d.put("/proc/sys/kernel/random/boot_id", "33333333-4444\n")
	if code, _, _ := d.cli(runArgs...); code != exitFailure || d.events() != "config:fail" || len(d.run.Calls()) != 0 {
		t.Errorf("second boot: exit %d, journal %q, calls %v", code, d.events(), d.run.Calls())
	}
	code, stdout, _ = d.cli("status")
	if code != exitOK || !strings.Contains(stdout, "FAILED: /boot/firmware/nixpi/nixpi.toml:3") || !strings.Contains(stdout, "/boot/firmware/nixpi/FAILED:") {
		t.Errorf("status: exit %d\n%s", code, stdout)
	}
}

// The Pi runs nixpi build's checks on the card's config before any step:
// a config that build would refuse (a release without a pin, a module that
// does not parse, a NUL in a string) stops at the config step, with no
// command run and no disk touched, at the key's line.
func TestPiRefusesWhatBuildRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, body, want string }{
		{"release without a pin", "schema = 1\n[nixos]\nrelease = \"25.11\"\n", `nixpi.toml:3: nixos.release = "25.11" has no nixpkgs pin`},
		{"module that does not parse", "schema = 1\n[nixos]\nextra_module = \"{ ... }: { x = [ ; }\"\n", "nixpi.toml:3: nixos.extra_module does not parse as Nix"},
		{"NUL in a string", "schema = 1\n[system]\nhostname = \"pi\\u0000\"\n", `nixpi.toml:3: system.hostname = "pi\x00" holds a NUL`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDevice(t)
			d.put("/boot/firmware/nixpi/nixpi.toml", tt.body)
			code, stdout, stderr := d.cli(runArgs...)
			if code != exitFailure || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, want 1 and %q\nstdout:\n%s\nstderr:\n%s", code, tt.want, stdout, stderr)
			}
			if got := d.events(); got != "config:fail" || len(d.run.Calls()) != 0 {
				t.Errorf("journal %q, calls %v; want only the config step's failure", got, d.run.Calls())
			}
		})
	}
}

// Where no nix-instantiate parsed the module, the service says so on its
// output (the system journal, before the card's log is open).
func TestPiSaysHowTheModuleWasParsed(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.put("/boot/firmware/nixpi/nixpi.toml", "schema = 1\n[nixos]\nextra_module = \"{ ... }: { }\"\n")
	_, stdout, _ := d.cli(append(runArgs, "--dry-run")...)
	if !strings.Contains(stdout, "config: nixos.extra_module checked by nixpi's own bracket check only") {
		t.Errorf("stdout:\n%s", stdout)
	}
}

func snapshot(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		data := []byte{}
		if !e.IsDir() {
			data, _ = os.ReadFile(path)
		}
		lines = append(lines, fmt.Sprintf("%s %x", strings.TrimPrefix(path, root), sha256.Sum256(data)))
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestDryRunPrintsPlanAndTouchesNothing(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.run.On("armv7l\n", "/usr/bin/uname", "-m")
	before := snapshot(t, d.root)
	code, stdout, stderr := d.cli(append(runArgs, "--dry-run", "--only", "preflight,arm64,packages")...)
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if after := snapshot(t, d.root); after != before {
		t.Errorf("dry run changed files:\n--- before\n%s\n--- after\n%s", before, after)
	}
	for _, want := range []string{
		"dry run, boot 1: nothing is changed",
		"1/3 preflight: would run (checks run on every boot)",
		"2/3 arm64: would run (the kernel is armv7l, not aarch64)",
		"3/3 packages: would run (missing mkfs.fat (dosfstools)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, stdout)
		}
	}
	if d.machine.Reboots() != 0 {
		t.Error("dry run rebooted")
	}
}

// The first boot as the card really starts it: systemd runs the binary with
// no arguments from systemd.run=; the real hook installs the payload the
// builder made and takes the hook words out of cmdline.txt.
func TestFirstBootHookInstallsService(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.realHook = true
	payload, err := builder.Payload([]byte("\x7fELF device binary"), "/boot/firmware", time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	d.put("/boot/firmware/nixpi/payload.cpio", string(payload))
	base := "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 fsck.repair=yes rootwait"
	withHook, err := bootfiles.AddHook(base+"\n", bootfiles.HookWords("/boot/firmware"))
	if err != nil {
		t.Fatal(err)
	}
	d.put("/boot/firmware/cmdline.txt", withHook)
	d.put("/proc/cmdline", withHook)
	d.put("/proc/consoles", "tty1                 -WU (EC p  )    4:1\n")
	d.put("/dev/tty1", "")

	for i := 0; i < 2; i++ { // a second run (power cut before the reboot) is harmless
		code, stdout, stderr := d.cli()
		if code != exitOK {
			t.Fatalf("run %d: exit %d\n%s\n%s", i, code, stdout, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(d.root, "boot/firmware/nixpi/journal.jsonl")); err == nil {
		t.Error("a hook that worked wrote a journal")
	}
	bin, err := os.Stat(filepath.Join(d.root, "usr/local/sbin/nixpi-firstboot"))
	if err != nil || bin.Mode().Perm() != 0o755 {
		t.Errorf("binary: %v, %v", bin, err)
	}
	if link, err := os.Readlink(filepath.Join(d.root, "etc/systemd/system/multi-user.target.wants/nixpi-firstboot.service")); err != nil || link != "../nixpi-firstboot.service" {
		t.Errorf("wants link = %q, %v", link, err)
	}
	cmdline, _ := os.ReadFile(filepath.Join(d.root, "boot/firmware/cmdline.txt"))
	if string(cmdline) != base+"\n" {
		t.Errorf("cmdline.txt = %q, want %q", cmdline, base+"\n")
	}
	console, _ := os.ReadFile(filepath.Join(d.root, "dev/tty1"))
	if !strings.Contains(string(console), "nixpi: service installed; rebooting to start the install") {
		t.Errorf("console:\n%s", console)
	}
}

// A missing config stops the install like a bad one; putting the config on
// the card is the person's action that lets the next boot retry.
func TestMissingConfigThenAddedRetries(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.run.On("aarch64\n", "/usr/bin/uname", "-m")
	if err := os.Remove(filepath.Join(d.root, "/boot/firmware/nixpi/nixpi.toml")); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := d.cli(append(runArgs, "--only", "preflight")...)
	if code != exitFailure || d.events() != "config:fail" || !strings.Contains(stdout, "put the install config at /boot/firmware/nixpi/nixpi.toml") {
		t.Fatalf("exit %d, journal %q\n%s\n%s", code, d.events(), stdout, stderr)
	}
	d.put("/boot/firmware/nixpi/nixpi.toml", string(config.Example()))
	code, stdout, stderr = d.cli(append(runArgs, "--only", "preflight")...)
	if code != exitOK || d.events() != "config:fail preflight:start preflight:done" || !strings.Contains(stdout, "retrying after the failure of step config in boot 1: the config changed") {
		t.Fatalf("after adding the config: exit %d, journal %q\n%s\n%s", code, d.events(), stdout, stderr)
	}
}

// A failing hook is journaled like a failing step, on the console and with
// the LED; the hook succeeding on a later boot ends that failure, so the
// service starts the install.
func TestHookFailureIsJournaledUntilTheHookWorks(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.put("/proc/cmdline", "root=PARTUUID=1234abcd-02 systemd.run=/boot/firmware/nixpi/nixpi-firstboot systemd.run_success_action=reboot\n")
	d.put("/proc/consoles", "tty1                 -WU (EC p  )    4:1\n")
	d.put("/dev/tty1", "")
	d.put("/sys/class/leds/ACT/trigger", "mmc0")
	d.hookErr = engine.WithHint(errors.New("payload.cpio: unexpected EOF"), "write the image to the card again")
	code, _, stderr := d.cli()
	if code != exitFailure || !strings.Contains(stderr, "payload.cpio: unexpected EOF") || d.events() != "hook:fail" {
		t.Fatalf("failing hook: exit %d, journal %q, stderr %q", code, d.events(), stderr)
	}
	console, _ := os.ReadFile(filepath.Join(d.root, "dev/tty1"))
	led, _ := os.ReadFile(filepath.Join(d.root, "sys/class/leds/ACT/trigger"))
	if !strings.Contains(string(console), "first-boot hook failed: payload.cpio: unexpected EOF") || string(led) != "timer" {
		t.Errorf("console %q, LED trigger %q", console, led)
	}
	_, status, _ := d.cli("status")
	if !strings.Contains(status, "FAILED: payload.cpio: unexpected EOF") || !strings.Contains(status, "fix: write the image to the card again") {
		t.Errorf("status:\n%s", status)
	}

	d.put("/proc/sys/kernel/random/boot_id", "33333333-4444\n")
	d.hookErr = nil
	if code, _, stderr := d.cli(); code != exitOK || d.events() != "hook:fail hook:done" {
		t.Fatalf("hook working again: exit %d, journal %q, stderr %q", code, d.events(), stderr)
	}
	// A hook that works the first time leaves no mark; neither does a rerun.
	if code, _, _ := d.cli(); code != exitOK || d.events() != "hook:fail hook:done" {
		t.Fatalf("rerun: exit %d, journal %q", code, d.events())
	}
	d.run.On("aarch64\n", "/usr/bin/uname", "-m")
	if code, stdout, stderr := d.cli(append(runArgs, "--only", "preflight")...); code != exitOK || strings.Contains(stdout, "INSTALL STOPPED") {
		t.Errorf("the service after the hook worked: exit %d\n%s\n%s", code, stdout, stderr)
	}
}
