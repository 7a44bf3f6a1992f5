package steps

// The test Pis: piEnv, a Raspberry Pi 4 running Raspberry Pi OS in a temp
// root, and handoverEnv, one after verify with the card and the bootloader
// the hand-over steps work on.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/progress"
	"github.com/nixpi/nixpi/firstboot/system"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

// piEnv is a temp root shaped like a Raspberry Pi 4 with 4 GB running
// Raspberry Pi OS, with a recording runner and a fake clock.
type piEnv struct {
	*engine.Env
	run  *systemtest.Runner
	logs []string
}

func newPiEnv(t *testing.T) *piEnv {
	t.Helper()
	run := &systemtest.Runner{}
	now := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	p := &piEnv{run: run}
	p.Env = &engine.Env{
		Config:  config.Default(),
		Root:    t.TempDir(),
		BootDir: "/boot/firmware",
		Run:     run,
		Machine: &systemtest.Machine{},
		Tools:   system.DefaultTools(),
		State:   &journal.State{},
		Now:     func() time.Time { return now },
		Sleep: func(ctx context.Context, d time.Duration) error {
			now = now.Add(d)
			return nil
		},
		Progress: func(format string, args ...any) { p.logs = append(p.logs, fmt.Sprintf(format, args...)) },
	}
	p.put(t, "/proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00")
	p.put(t, "/proc/meminfo", "MemTotal:        3884328 kB\nMemFree:         3000000 kB\n")
	p.put(t, "/boot/firmware/config.txt", "# For more options and information see\n[pi4]\narm_boost=1\n\n[all]\nenable_uart=1\n")
	p.put(t, "/proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n")
	for _, tool := range []string{p.Tools.Vcgencmd, p.Tools.Uname} {
		p.put(t, tool, "")
	}
	return p
}

func (p *piEnv) put(t *testing.T, path, data string) {
	t.Helper()
	full := p.Path(path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (p *piEnv) remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(p.Path(path)); err != nil {
		t.Fatal(err)
	}
}

func (p *piEnv) log() string { return strings.Join(p.logs, "\n") }

// journalEvents is the card's journal as its events, space-separated.
func (p *piEnv) journalEvents(t *testing.T) string {
	t.Helper()
	j, err := journal.ReadFile(p.Path(p.BootDir))
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, e := range j.Entries {
		events = append(events, string(e.Event))
	}
	return strings.Join(events, " ")
}

// networkUp gives the root a default route and a name server.
func (p *piEnv) networkUp(t *testing.T) {
	p.put(t, "/proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"+
		"eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n")
	p.put(t, "/etc/resolv.conf", "nameserver 192.168.1.1\n")
}

// rpiEEPROMData is ../shared/testdata/rpi-eeprom next to the repository:
// real Raspberry Pi 4 bootloader images. Tests that need them skip without.
func rpiEEPROMData(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "shared", "testdata", "rpi-eeprom"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "images")); err != nil {
		t.Skipf("real bootloader images not found at %s (see DESIGN.md §3): %v", dir, err)
	}
	return dir
}

// imageTS is the BUILD_TIMESTAMP of the real image of that date.
func imageTS(t testing.TB, date string) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(rpiEEPROMData(t), "images", "pieeprom-"+date+".bin"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := eeprom.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	ts, ok := im.BuildTimestamp()
	if !ok {
		t.Fatalf("pieeprom-%s.bin has no BUILD_TIMESTAMP", date)
	}
	return ts
}

// shippedBootloaderConfig is what `vcgencmd bootloader_config` prints on a
// Pi whose EEPROM was never configured: the factory settings.
const shippedBootloaderConfig = "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\n"

// handoverEnv is a Pi 4 after verify: Raspberry Pi OS's rpi-eeprom files
// (real images), the card's FAT with its boot files and a config holding
// secrets, and vcgencmd answering for a bootloader of runningDate.
type handoverEnv struct {
	*piEnv
	display *recordingDisplay
}

func newHandoverEnv(t *testing.T, order, runningConfig, runningDate string) *handoverEnv {
	t.Helper()
	real := rpiEEPROMData(t)
	h := &handoverEnv{piEnv: newPiEnv(t), display: &recordingDisplay{}}
	h.Config.Boot.BootOrder = order
	h.Config.System.Hostname = "garden"
	h.put(t, deviceTreeCompat, "raspberrypi,4-model-b\x00brcm,bcm2711\x00")
	h.put(t, "/proc/sys/kernel/random/boot_id", "boot-1\n")
	for release, dates := range map[string][]string{"default": {"2022-11-25", "2023-01-11"}, "latest": {"2026-08-04"}} {
		for _, d := range dates {
			h.link(t, filepath.Join(real, "images", "pieeprom-"+d+".bin"), filepath.Join(bootloaderDir, release, "pieeprom-"+d+".bin"))
		}
		h.link(t, filepath.Join(real, "recovery.bin"), filepath.Join(bootloaderDir, release, "recovery.bin"))
	}
	for name, data := range map[string]string{
		"start4.elf": "start4", "start.elf": "start", "fixup4.dat": "fixup4", "bootcode.bin": "bootcode",
		"kernel8.img": "kernel8", "kernel_2712.img": "kernel_2712", "initramfs8": "initramfs8",
		"bcm2711-rpi-4-b.dtb": "dtb", "bcm2711-rpi-400.dtb": "dtb400",
		"overlays/README": "readme", "overlays/vc4-kms-v3d.dtbo": "vc4",
		"cmdline.txt":      "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 fsck.repair=yes rootwait\n",
		"issue.txt":        "Raspberry Pi reference 2025-11-24\n",
		"LICENCE.broadcom": "licence\n",
	} {
		h.put(t, filepath.Join(h.BootDir, name), data)
	}
	cfg := *h.Config
	cfg.Schema = config.SchemaVersion
	cfg.Users = []config.User{
		{Name: "alice", PasswordHash: "$y$j9T$Zs0aLtLlV7Y1qX8m$ZyW6YvgqAhC1R0q5xk1eN1mN3m6F0tK6p2m9L0w7t9.", SSHKeys: []string{testSSHKey}},
		{Name: "bob", PasswordHash: "$6$rounds=5000$saltsalt$Qh3R3wXhQy0n7Vq5cR0o2m0wJ8d2yq6T2s8b3Y5u0x1e6G9m2kQ9l3pA7c4Z8n1v5J0r2t6W9y3B5d7F1h3K5."},
	}
	cfg.WLAN = &config.WLAN{SSID: "garden-net", PSK: "correct horse battery", Country: "DE"}
	data, err := config.Encode(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(cardpath.Config, data); err != nil {
		t.Fatalf("test config does not parse: %v", err)
	}
	h.put(t, filepath.Join(h.BootDir, cardpath.Config), string(data))
	h.Config = &cfg

	h.run.On(runningConfig, h.Tools.Vcgencmd, "bootloader_config")
	if runningDate != "" {
		ts := imageTS(t, runningDate)
		h.run.On(strings.ReplaceAll(runningDate, "-", "/")+" 12:00:00\nversion 0123456789abcdef (release)\ntimestamp "+strconv.FormatInt(ts, 10)+"\nupdate-time 0\ncapabilities 0x0000007f\n",
			h.Tools.Vcgencmd, "bootloader_version")
	}
	h.run.On("2: eth0    inet 192.168.1.23/24 brd 192.168.1.255 scope global dynamic noprefixroute eth0\\       valid_lft 86000sec preferred_lft 86000sec\n",
		h.Tools.IP, "-o", "addr", "show", "scope", "global")
	h.run.On("", h.Tools.Systemctl, "disable", cardpath.UnitName)

	// What the install left for the trial: the card's FAT and the SSD
	// mounted, the service binary on the card, the boot files the firmware
	// step took from the store, the installed system.
	mountinfo := "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw\n" +
		"30 22 179:1 / " + h.Path(h.BootDir) + " rw,relatime shared:2 - vfat /dev/mmcblk0p1 rw,fmask=0022\n" +
		"40 22 0:41 /@ " + h.Path(installRoot) + " rw,relatime shared:40 - btrfs /dev/sda3 rw,subvol=/@\n"
	h.put(t, "/proc/self/mountinfo", mountinfo)
	h.run.On(`{"blockdevices":[{"name":"mmcblk0p1","kname":"mmcblk0p1","path":"/dev/mmcblk0p1","type":"part","maj:min":"179:1","size":536870912,"fstype":"vfat","label":"bootfs","partuuid":"1234abcd-01"}]}`,
		h.Tools.Lsblk, "-J", "-b", "-O", "/dev/mmcblk0p1")
	h.put(t, filepath.Join(h.BootDir, cardpath.Binary), "nixpi-firstboot binary for the test\n")
	h.State.SystemPath = "/nix/store/0000000000000000000000000000test-nixos-system-garden"
	h.State.Firmware = map[string]string{}
	for name, src := range map[string]string{"u-boot-rpi4.bin": "/nix/store/uboot/u-boot.bin", "armstub8-gic.bin": "/nix/store/armstubs/armstub8-gic.bin"} {
		h.put(t, src, "store "+name+"\n")
		h.State.Firmware[name] = src
	}
	return h
}

// nextBoot is the Pi booting again: a new boot id, the saved state as the
// engine loads it from the journal.
func (h *handoverEnv) nextBoot(t *testing.T, id string) {
	t.Helper()
	h.put(t, "/proc/sys/kernel/random/boot_id", id+"\n")
	h.State = &journal.State{}
	h.OnNixOS = false
}

// flashStaged plays the boot ROM and recovery.bin on a reboot: the staged
// update becomes the running bootloader (its config and build), and
// recovery.bin renames itself.
func (h *handoverEnv) flashStaged(t *testing.T) {
	t.Helper()
	boot := h.Path(h.BootDir)
	upd, err := os.ReadFile(filepath.Join(boot, cardpath.EEPROMUpdate))
	if err != nil {
		t.Fatalf("nothing staged to flash: %v", err)
	}
	im, err := eeprom.Parse(upd)
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := im.BuildTimestamp()
	h.run.Set(string(im.Config()), h.Tools.Vcgencmd, "bootloader_config")
	h.run.Set(time.Unix(ts, 0).UTC().Format("2006/01/02 15:04:05")+"\nversion 0123456789abcdef (release)\ntimestamp "+strconv.FormatInt(ts, 10)+"\nupdate-time 0\ncapabilities 0x0000007f\n",
		h.Tools.Vcgencmd, "bootloader_version")
	if err := os.Rename(filepath.Join(boot, cardpath.Recovery), filepath.Join(boot, cardpath.RecoveryDone)); err != nil {
		t.Fatal(err)
	}
}

// asNixOS is the trial boot coming up: NixOS runs from the SSD (the same
// temporary root plays its root), the card's FAT mounted at BootDir.
func (h *handoverEnv) asNixOS(t *testing.T, id string) {
	t.Helper()
	h.nextBoot(t, id)
	h.OnNixOS = true
	full := h.Path("/run/current-system")
	os.MkdirAll(filepath.Dir(full), 0o755)
	os.Remove(full)
	if err := os.Symlink("/nix/store/0000000000000000000000000000test-nixos-system-garden", full); err != nil {
		t.Fatal(err)
	}
	os.Remove(h.Path(systemProfile))
	h.link(t, "system-1-link", systemProfile)
	h.put(t, "/proc/stat", "cpu  1 2 3\nbtime 1764640000\n")
	h.Addresses = func() ([]string, error) { return []string{"192.168.1.42"}, nil }
}

// confirmed marks the hand-over as NixOS confirmed it, for the tests of
// the steps after confirm.
func (h *handoverEnv) confirmed() {
	handOver(h.Env).Confirmed = &journal.Confirmation{Time: time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC), Boot: 3, System: h.State.SystemPath}
}

const testSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb1bCm6DZZiwDHR6GkqAHP8CjUJ7VO5S2ekvMjr9xBv alice@laptop"

func (h *handoverEnv) link(t *testing.T, target, path string) {
	t.Helper()
	full := h.Path(path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		t.Fatal(err)
	}
}

// markVerified journals issue 10's last step as done, which the hand-over
// needs.
func (h *handoverEnv) markVerified(t *testing.T) {
	t.Helper()
	w, err := journal.Create(h.Path(h.BootDir))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Append(journal.Entry{Step: "verify", Event: journal.Done, Time: time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC), Boot: 1, BootID: "boot-1"}); err != nil {
		t.Fatal(err)
	}
}

// card is the FAT's tree: path → sha256 (directories "dir"), without the
// journal and log, which grow with every run.
func (h *handoverEnv) card(t *testing.T) map[string]string {
	t.Helper()
	return tree(t, h.Path(h.BootDir), cardpath.Journal, cardpath.Log)
}

func tree(t *testing.T, root string, skip ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		for _, s := range skip {
			if rel == s {
				return nil
			}
		}
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			out[rel] = "dir"
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		out[rel] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(a, b map[string]string) []string {
	var diffs []string
	for k, v := range a {
		if b[k] != v {
			diffs = append(diffs, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, k)
		}
	}
	sort.Strings(diffs)
	return diffs
}

func rootNames(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// referenceSHA256 is the sha256 of what Raspberry Pi's rpi-eeprom-config
// wrote for image with the named config (testdata/eeprom/reference.sha256).
func referenceSHA256(t *testing.T, image, kase string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "eeprom", "reference.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 3 && fields[1] == image && fields[2] == kase {
			return fields[0]
		}
	}
	t.Fatalf("no reference for %s %s", image, kase)
	return ""
}

// recordingDisplay records what the engine shows on the consoles and LED.
type recordingDisplay struct {
	lines []string
	leds  []progress.Pattern
}

func (d *recordingDisplay) Say(line string)        { d.lines = append(d.lines, line) }
func (d *recordingDisplay) LED(p progress.Pattern) { d.leds = append(d.leds, p) }
