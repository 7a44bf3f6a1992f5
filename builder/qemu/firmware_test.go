package qemu

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/system"
)

// fatSSDImage writes an SSD image as the partition step makes it: a GPT
// whose partition 1 (EF00) is a FAT32 holding files.
func fatSSDImage(t *testing.T, files map[string][]byte) string {
	t.Helper()
	tools := DefaultTools()
	for _, tool := range []string{tools.Sgdisk, tools.MkfsFAT, tools.Mcopy, "/usr/bin/mmd"} {
		if _, err := os.Stat(tool); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install gdisk dosfstools mtools)", tool)
		}
	}
	img := filepath.Join(t.TempDir(), "ssd.img")
	if err := NewBlankDisk(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tools.Sgdisk, "-n1:2048:+40M", "-t1:EF00", "-n2:0:0", "-t2:8300", img).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v: %s", err, out)
	}
	if out, err := exec.Command(tools.MkfsFAT, "-F", "32", "--offset", "2048", img, "40960").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.fat: %v: %s", err, out)
	}
	putFATFiles(t, img+"@@1048576", files)
	return img
}

const (
	testSystem    = "/nix/store/00000000000000000000000000000000-nixos-system-nixpi-e2e-26.05"
	testExtlinux  = "# Generated file, all changes will be lost on nixos-rebuild!\n\n# Change this to e.g. nixos-42 to temporarily boot to an older configuration.\nDEFAULT nixos-default\n\nMENU TITLE ------------------------------------------------------------\nTIMEOUT 50\n\nLABEL nixos-default\n  MENU LABEL NixOS - Default\n  LINUX ../nixos/aaa-linux-Image\n  INITRD ../nixos/bbb-initrd-initrd\n  APPEND init=" + testSystem + "/init loglevel=4\n  FDTDIR ../nixos/ccc-linux-dtbs\n"
	testSSDConfig = "[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narmstub=armstub8-gic.bin\ndisable_overscan=1\narm_boost=1\n\n[all]\narm_64bit=1\nenable_uart=1\navoid_warnings=1\n"
	testTryboot   = "[all]\nkernel=nixpi/trial/u-boot-rpi4.bin\narmstub=nixpi/trial/armstub8-gic.bin\nenable_gic=1\narm_64bit=1\nenable_uart=1\n"
)

// Disks as the device leaves them: the card before and after the hand-over,
// the card staged for a trial boot, the installed SSD.
func testCard() map[string][]byte {
	return map[string][]byte{
		pi4Firmware:           []byte("start4"),
		cardpath.ConfigTxt:    []byte(configTxt),
		"kernel8.img":         []byte("the card's kernel"),
		"initramfs8":          []byte("the card's initramfs"),
		cardpath.Cmdline:      []byte("console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 rootwait\n"),
		cardpath.Journal:      nil,
		cardpath.Log:          nil,
		"bcm2711-rpi-4-b.dtb": []byte("dtb"),
	}
}

func retiredCard() map[string][]byte {
	files := testCard()
	delete(files, pi4Firmware)
	delete(files, cardpath.ConfigTxt)
	return files
}

func trialCard() map[string][]byte {
	files := testCard()
	files["tryboot.txt"] = []byte(testTryboot)
	files["nixpi/trial/u-boot-rpi4.bin"] = []byte("stand-in u-boot.bin")
	files["nixpi/trial/armstub8-gic.bin"] = []byte("stand-in armstub8-gic.bin")
	return files
}

func testSSD() map[string][]byte {
	return map[string][]byte{
		pi4Firmware:               []byte("stand-in start4.elf"),
		cardpath.ConfigTxt:        []byte(testSSDConfig),
		"u-boot-rpi4.bin":         []byte("stand-in u-boot.bin"),
		"armstub8-gic.bin":        []byte("stand-in armstub8-gic.bin"),
		"extlinux/extlinux.conf":  []byte(testExtlinux),
		"nixos/aaa-linux-Image":   []byte("the SSD's kernel"),
		"nixos/bbb-initrd-initrd": []byte("the SSD's initrd"),
		"nixos/ccc-linux-dtbs/broadcom/bcm2711-rpi-4-b.dtb": []byte("dtb"),
	}
}

func without(files map[string][]byte, names ...string) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range files {
		out[k] = v
	}
	for _, n := range names {
		delete(out, n)
	}
	return out
}

func with(files map[string][]byte, name, content string) map[string][]byte {
	out := without(files)
	out[name] = []byte(content)
	return out
}

func testPi(t *testing.T, card, ssd string, state *EEPROM) *Pi {
	return &Pi{Card: card, SSD: ssd, EEPROM: state, Dir: t.TempDir(), Run: system.ExecRunner{}, Tools: DefaultTools()}
}

func TestEEPROMState(t *testing.T) {
	t.Parallel()
	image, err := os.ReadFile(testImage)
	if err != nil {
		t.Skipf("skipping: no Raspberry Pi test data next to the repository (%v)", err)
	}
	state, err := EEPROMFromImage(image)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := eeprom.Parse(image)
	if ts, _ := im.BuildTimestamp(); state.Timestamp != ts || string(state.Config) != string(im.Config()) || ts == 0 {
		t.Errorf("state %d %q, want the image's build %d and config", state.Timestamp, state.Config, ts)
	}
	if got := state.BootOrder(); got != "0xf41" {
		t.Errorf("the image's config sets no BOOT_ORDER: got %s, want the default 0xf41", got)
	}
	sd, err := state.WithBootOrder("0xf1")
	if err != nil || sd.BootOrder() != "0xf1" || state.BootOrder() != "0xf41" {
		t.Errorf("WithBootOrder(0xf1) = %v (%v), and the original %s", sd, err, state.BootOrder())
	}
	if _, err := state.WithBootOrder("0xz"); err == nil {
		t.Error("WithBootOrder took a BOOT_ORDER that is no boot order")
	}
	for cfg, want := range map[string]string{
		"[all]\nBOOT_ORDER=0xf14\n":                            "0xf14",
		"BOOT_ORDER=0xf1\n[all]\nBOOT_ORDER=0xf41\n":           "0xf41",
		"[all]\nBOOT_ORDER=0xf41\n[gpio4=1]\nBOOT_ORDER=0x1\n": "0xf41",
		"[none]\nBOOT_ORDER=0x1\n":                             "0xf41",
	} {
		if got := (&EEPROM{Config: []byte(cfg)}).BootOrder(); got != want {
			t.Errorf("BootOrder of %q = %s, want %s", cfg, got, want)
		}
	}
	var none *EEPROM
	if none.BootOrder() != "0xf41" {
		t.Error("a Pi with no known EEPROM does not boot by the default order")
	}
	text := state.VersionText()
	ts, err := eeprom.ParseBootloaderVersion([]byte(text))
	if err != nil || ts != state.Timestamp {
		t.Errorf("the device reads timestamp %d (%v) from %q, want %d", ts, err, text, state.Timestamp)
	}
	first, _, _ := strings.Cut(text, "\n")
	if d, err := time.Parse("2006/01/02 15:04:05", first); err != nil || d.Unix() != state.Timestamp {
		t.Errorf("first line %q is not the build date as vcgencmd prints it (%v)", first, err)
	}
}

func TestFlashStaged(t *testing.T) {
	t.Parallel()
	image, err := os.ReadFile(testImage)
	if err != nil {
		t.Skipf("skipping: no Raspberry Pi test data next to the repository (%v)", err)
	}
	upd, err := expectedUpdate(testImage, "0xf41")
	if err != nil {
		t.Fatal(err)
	}
	staged := with(with(with(testCard(), cardpath.Recovery, "recovery"), cardpath.EEPROMUpdate, string(upd)),
		cardpath.EEPROMSig, string(eeprom.Digest(upd, 1789114715)))
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		files   map[string][]byte
		flashed bool
		why     string
	}{
		{"nothing staged", testCard(), false, ""},
		{"staged", staged, true, ""},
		{"a .sig for another image", with(staged, cardpath.EEPROMSig, string(eeprom.Digest(image, 1))), false, "does not hold the sha256"},
		{"no ts: line", with(staged, cardpath.EEPROMSig, strings.SplitAfter(string(eeprom.Digest(upd, 1)), "\n")[0]), false, "does not hold the sha256"},
		{"recovery.bin alone", without(staged, cardpath.EEPROMUpdate, cardpath.EEPROMSig), false, "nothing to flash"},
		{"already flashed", with(without(staged, cardpath.Recovery), cardpath.RecoveryDone, "recovery"), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			card, err := OpenCard(fatCardImage(t, tc.files), system.ExecRunner{}, DefaultTools())
			if err != nil {
				t.Fatal(err)
			}
			state, why, err := flashStaged(ctx, card)
			if err != nil {
				t.Fatal(err)
			}
			if (state != nil) != tc.flashed || !strings.Contains(why, tc.why) || (tc.why == "") != (why == "") {
				t.Fatalf("flashed %v (%q), want %v (%q)", state != nil, why, tc.flashed, tc.why)
			}
			_, recErr := card.ReadFile(ctx, cardpath.Recovery)
			_, doneErr := card.ReadFile(ctx, cardpath.RecoveryDone)
			if tc.flashed {
				if state.BootOrder() != "0xf41" || !errors.Is(recErr, fs.ErrNotExist) || doneErr != nil {
					t.Errorf("after the flash: BOOT_ORDER %s, recovery.bin %v, %s %v", state.BootOrder(), recErr, cardpath.RecoveryDone, doneErr)
				}
			} else if _, ok := tc.files[cardpath.Recovery]; ok && recErr != nil {
				t.Errorf("recovery.bin renamed without a flash: %v", recErr)
			}
		})
	}
}

func TestPowerOnChoosesTheBootSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	order := func(o string) *EEPROM { return &EEPROM{Config: []byte("[all]\nBOOT_ORDER=" + o + "\n")} }
	for _, tc := range []struct {
		name      string
		card, ssd map[string][]byte // nil ssd: a blank disk
		state     *EEPROM
		tryboot   bool
		source    BootSource
		kernel    string // what -kernel gets; "" for no boot
		cmdline   string
		noBoot    string
		note      string
		retired   bool
	}{
		{name: "the card, as today", card: testCard(), ssd: testSSD(), source: SourceCard, kernel: "the card's kernel",
			cmdline: "console=ttyAMA0 root=PARTUUID=1234abcd-02 rootfstype=ext4 rootwait"},
		{name: "the card before the SSD is installed", card: testCard(), source: SourceCard, kernel: "the card's kernel",
			cmdline: "console=ttyAMA0 root=PARTUUID=1234abcd-02 rootfstype=ext4 rootwait"},
		{name: "tryboot: the card's U-Boot boots the SSD's extlinux", card: trialCard(), ssd: testSSD(), tryboot: true,
			source: SourceTryboot, kernel: "the SSD's kernel", cmdline: "console=ttyAMA0 init=" + testSystem + "/init loglevel=4"},
		{name: "tryboot without tryboot.txt", card: testCard(), ssd: testSSD(), tryboot: true, source: SourceTryboot, noBoot: "no tryboot.txt"},
		{name: "tryboot.txt names no U-Boot", card: without(trialCard(), "nixpi/trial/u-boot-rpi4.bin"), ssd: testSSD(), tryboot: true,
			source: SourceTryboot, noBoot: "kernel=nixpi/trial/u-boot-rpi4.bin: no nixpi/trial/u-boot-rpi4.bin"},
		{name: "an empty armstub", card: with(trialCard(), "nixpi/trial/armstub8-gic.bin", ""), ssd: testSSD(), tryboot: true,
			source: SourceTryboot, noBoot: "armstub=nixpi/trial/armstub8-gic.bin: nixpi/trial/armstub8-gic.bin is empty"},
		{name: "tryboot with a blank SSD", card: trialCard(), tryboot: true, source: SourceTryboot, noBoot: "found nothing to boot"},
		{name: "a retired card: USB", card: retiredCard(), ssd: testSSD(), source: SourceUSB, kernel: "the SSD's kernel",
			cmdline: "console=ttyAMA0 init=" + testSystem + "/init loglevel=4", retired: true},
		{name: "a retired card, USB first", card: retiredCard(), ssd: testSSD(), state: order("0xf14"), source: SourceUSB, kernel: "the SSD's kernel",
			cmdline: "console=ttyAMA0 init=" + testSystem + "/init loglevel=4"},
		{name: "USB first, the card still boots", card: testCard(), ssd: testSSD(), state: order("0xf14"), source: SourceUSB, kernel: "the SSD's kernel",
			cmdline: "console=ttyAMA0 init=" + testSystem + "/init loglevel=4"},
		{name: "a retired card, an order without USB", card: retiredCard(), ssd: testSSD(), state: order("0xf1"), noBoot: "BOOT_ORDER 0xf1 boots nothing: SD: no start4.elf", retired: true},
		{name: "an order that stops first", card: testCard(), ssd: testSSD(), state: order("0xe1"), source: SourceCard, kernel: "the card's kernel",
			cmdline: "console=ttyAMA0 root=PARTUUID=1234abcd-02 rootfstype=ext4 rootwait"},
		{name: "stop before USB", card: retiredCard(), ssd: testSSD(), state: order("0x4e1"), noBoot: "boots nothing", retired: true},
		{name: "a retired card and a blank SSD", card: retiredCard(), noBoot: "USB:", retired: true},
		{name: "an SSD without the firmware", card: retiredCard(), ssd: without(testSSD(), pi4Firmware), noBoot: "USB: no start4.elf on the SSD's partition 1", retired: true},
		{name: "an SSD without config.txt", card: retiredCard(), ssd: without(testSSD(), cardpath.ConfigTxt), source: SourceUSB, noBoot: "the firmware on the SSD: no config.txt", retired: true},
		{name: "an SSD without U-Boot", card: retiredCard(), ssd: without(testSSD(), "u-boot-rpi4.bin"), source: SourceUSB, noBoot: "kernel=u-boot-rpi4.bin: no u-boot-rpi4.bin", retired: true},
		{name: "an SSD without extlinux.conf", card: retiredCard(), ssd: without(testSSD(), "extlinux/extlinux.conf"), source: SourceUSB, noBoot: "no extlinux/extlinux.conf on the card or the SSD", retired: true},
		{name: "an SSD without its kernel", card: retiredCard(), ssd: without(testSSD(), "nixos/aaa-linux-Image"), source: SourceUSB,
			noBoot: "label nixos-default: LINUX ../nixos/aaa-linux-Image: no /nixos/aaa-linux-Image", retired: true},
		{name: "an empty initrd", card: retiredCard(), ssd: with(testSSD(), "nixos/bbb-initrd-initrd", ""), source: SourceUSB,
			noBoot: "INITRD ../nixos/bbb-initrd-initrd: /nixos/bbb-initrd-initrd is empty", retired: true},
		{name: "no device tree in FDTDIR", card: retiredCard(), ssd: without(testSSD(), "nixos/ccc-linux-dtbs/broadcom/bcm2711-rpi-4-b.dtb"),
			source: SourceUSB, kernel: "the SSD's kernel", cmdline: "console=ttyAMA0 init=" + testSystem + "/init loglevel=4",
			note: "FDTDIR ../nixos/ccc-linux-dtbs: no /nixos/ccc-linux-dtbs/broadcom/bcm2711-rpi-4-b.dtb", retired: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ssd := filepath.Join(t.TempDir(), "blank.img")
			if tc.ssd != nil {
				ssd = fatSSDImage(t, tc.ssd)
			} else if err := NewBlankDisk(ssd, 64<<20); err != nil {
				t.Fatal(err)
			}
			pi := testPi(t, fatCardImage(t, tc.card), ssd, tc.state)
			pi.Tryboot = tc.tryboot
			plan, err := pi.PowerOn(ctx, 3)
			if err != nil {
				t.Fatal(err)
			}
			if pi.Tryboot {
				t.Error("the tryboot flag survived the power-on")
			}
			if plan.Source != tc.source || plan.CardRetired != tc.retired {
				t.Errorf("source %q (card retired %v), want %q (%v); plan %+v", plan.Source, plan.CardRetired, tc.source, tc.retired, plan)
			}
			if tc.noBoot != "" {
				if !strings.Contains(plan.NoBoot, tc.noBoot) {
					t.Errorf("no boot %q, want it to say %q", plan.NoBoot, tc.noBoot)
				}
				return
			}
			if plan.NoBoot != "" {
				t.Fatalf("no boot: %s", plan.NoBoot)
			}
			kernel, err := os.ReadFile(plan.Kernel)
			if err != nil || string(kernel) != tc.kernel || plan.Cmdline != tc.cmdline || filepath.Dir(plan.Kernel) != pi.Dir {
				t.Errorf("kernel %s %q (%v), cmdline %q; want %q, %q", plan.Kernel, kernel, err, plan.Cmdline, tc.kernel, tc.cmdline)
			}
			if initrd, err := os.ReadFile(plan.Initrd); err != nil || !strings.Contains(string(initrd), "init") {
				t.Errorf("initrd %s %q (%v)", plan.Initrd, initrd, err)
			}
			if notes := strings.Join(plan.Notes, "\n"); !strings.Contains(notes, tc.note) || (tc.note == "") != (notes == "") {
				t.Errorf("notes %q, want %q", notes, tc.note)
			}
		})
	}
}

// TestPowerOnFlashesFirst: the boot ROM flashes a staged update before
// BOOT_ORDER applies, and the Pi boots by the new order.
func TestPowerOnFlashesFirst(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(testImage); err != nil {
		t.Skipf("skipping: no Raspberry Pi test data next to the repository (%v)", err)
	}
	upd, err := expectedUpdate(testImage, "0xf41")
	if err != nil {
		t.Fatal(err)
	}
	card := with(with(with(retiredCard(), cardpath.Recovery, "recovery"), cardpath.EEPROMUpdate, string(upd)),
		cardpath.EEPROMSig, string(eeprom.Digest(upd, 1789114715)))
	pi := testPi(t, fatCardImage(t, card), fatSSDImage(t, testSSD()), &EEPROM{Config: []byte("[all]\nBOOT_ORDER=0xf1\n")})
	plan, err := pi.PowerOn(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Flashed == nil || pi.EEPROM != plan.Flashed || pi.EEPROM.BootOrder() != "0xf41" || plan.Source != SourceUSB || plan.NoBoot != "" {
		t.Errorf("plan %+v, EEPROM BOOT_ORDER %s: want the update flashed, then a USB boot", plan, pi.EEPROM.BootOrder())
	}
	again, err := pi.PowerOn(context.Background(), 3)
	if err != nil || again.Flashed != nil {
		t.Errorf("the update was flashed twice (%v)", err)
	}
}
