package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/system"
)

func TestParseExtlinux(t *testing.T) {
	t.Parallel()
	conf := ParseExtlinux(testExtlinux + `
LABEL nixos-2
  MENU LABEL NixOS - Configuration 2 (26.05.stand-in.abcdef0)
  linux ../nixos/old-Image#conf@1
  append root=/dev/sda3 initrd=/nixos/old-initrd quiet
  initrd ../nixos/ignored-since-append-named-one
  FDT /nixos/old.dtb
# a comment
LABEL bare
	KERNEL /k
`)
	want := &Extlinux{Default: "nixos-default", Timeout: 50, Menu: true, Labels: []ExtlinuxLabel{
		{Name: "nixos-default", MenuLabel: "NixOS - Default", Kernel: "../nixos/aaa-linux-Image", Initrd: "../nixos/bbb-initrd-initrd",
			Append: "init=" + testSystem + "/init loglevel=4", FDTDir: "../nixos/ccc-linux-dtbs"},
		{Name: "nixos-2", MenuLabel: "NixOS - Configuration 2 (26.05.stand-in.abcdef0)", Kernel: "../nixos/old-Image",
			Initrd: "/nixos/old-initrd", Append: "root=/dev/sda3 initrd=/nixos/old-initrd quiet", FDT: "/nixos/old.dtb"},
		{Name: "bare", Kernel: "/k"},
	}}
	if !reflect.DeepEqual(conf, want) {
		t.Errorf("got  %+v\nwant %+v", conf, want)
	}
	if labels, missing := conf.BootOrder(); missing != "" || len(labels) != 3 || labels[0].Name != "nixos-default" {
		t.Errorf("boot order %v, missing %q", labels, missing)
	}

	for _, tc := range []struct {
		name, text string
		order      []string
		missing    string
		waits      bool
	}{
		{"DEFAULT names another label", "DEFAULT b\nTIMEOUT 10\nLABEL a\nLINUX /a\nLABEL b\nLINUX /b\n", []string{"b", "a"}, "", false},
		{"DEFAULT names nothing: U-Boot tries the labels in order", "DEFAULT gone\nLABEL a\nLINUX /a\nLABEL b\nLINUX /b\n", []string{"a", "b"}, "gone", false},
		{"MENU DEFAULT", "LABEL a\nLINUX /a\nLABEL b\nMENU DEFAULT\nLINUX /b\n", []string{"b", "a"}, "", false},
		{"the last DEFAULT wins", "DEFAULT a\nONTIMEOUT b\nLABEL a\nLINUX /a\nLABEL b\nLINUX /b\n", []string{"b", "a"}, "", false},
		{"a keyword ends the label", "LABEL a\nLINUX /a\nDEFAULT a\nLABEL b\nLINUX /b\n", []string{"a", "b"}, "", false},
		{"a menu without a timeout waits for a key", "MENU TITLE x\nLABEL a\nLINUX /a\n", []string{"a"}, "", true},
		{"timeout 0 (NixOS's -10) waits too", "MENU TITLE x\nTIMEOUT -10\nLABEL a\nLINUX /a\n", []string{"a"}, "", true},
		{"no menu, no prompt", "TIMEOUT 0\nLABEL a\nLINUX /a\n", []string{"a"}, "", false},
		{"empty", "", nil, "", false},
	} {
		c := ParseExtlinux(tc.text)
		labels, missing := c.BootOrder()
		var names []string
		for _, l := range labels {
			names = append(names, l.Name)
		}
		if !reflect.DeepEqual(names, tc.order) || missing != tc.missing || c.WaitsAtMenu() != tc.waits {
			t.Errorf("%s: order %v, missing %q, waits %v; want %v, %q, %v", tc.name, names, missing, c.WaitsAtMenu(), tc.order, tc.missing, tc.waits)
		}
	}
}

// TestUBootFallsBack: U-Boot boots the next label when the default one
// does not load, an extlinux.conf on the card comes first, and one that
// boots nothing passes the scan on to the next device.
func TestUBootFallsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	twoLabels := strings.Replace(testExtlinux, "DEFAULT nixos-default", "DEFAULT nixos-missing", 1) +
		"\nLABEL nixos-1\n  LINUX /nixos/gen1-Image\n  APPEND init=/nix/store/gen1/init\n"
	for _, tc := range []struct {
		name      string
		card, ssd map[string][]byte
		kernel    string
		via       string
		note      string
		noBoot    string
	}{
		{"a damaged default: the next label", trialCard(), with(without(testSSD(), "nixos/aaa-linux-Image"), "extlinux/extlinux.conf", twoLabels),
			"gen1", "label nixos-1", "Missing default: nixos-missing", ""},
		{"the card's extlinux.conf first", with(with(trialCard(), "boot/extlinux/extlinux.conf", "LABEL card\nLINUX ../k\n"), "boot/k", "card kernel"),
			testSSD(), "card kernel", "the card's /boot/extlinux/extlinux.conf, label card", "", ""},
		{"the card's boots nothing: on to the SSD", with(trialCard(), "extlinux/extlinux.conf", "LABEL card\nLINUX /gone\n"),
			testSSD(), "the SSD's kernel", "the SSD's /extlinux/extlinux.conf, label nixos-default", "", ""},
		{"a menu that waits", trialCard(), with(testSSD(), "extlinux/extlinux.conf", strings.Replace(testExtlinux, "TIMEOUT 50", "TIMEOUT 0", 1)),
			"", "", "", "U-Boot waits at its menu for a choice (MENU with TIMEOUT 0)"},
		{"nothing loads", trialCard(), with(without(testSSD(), "nixos/aaa-linux-Image"), "extlinux/extlinux.conf", twoLabels),
			"", "", "", "label nixos-default: LINUX ../nixos/aaa-linux-Image: no /nixos/aaa-linux-Image; the SSD's /extlinux/extlinux.conf: label nixos-1: LINUX /nixos/gen1-Image: no /nixos/gen1-Image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ssd := tc.ssd
			if tc.kernel == "gen1" {
				ssd = with(ssd, "nixos/gen1-Image", "gen1")
			}
			card, err := OpenCard(fatCardImage(t, tc.card), system.ExecRunner{}, DefaultTools())
			if err != nil {
				t.Fatal(err)
			}
			ssdImg := fatSSDImage(t, ssd)
			dev := bootDevices{card: card, ssd: func() (*Card, error) { return OpenSSDBoot(ssdImg, system.ExecRunner{}, DefaultTools()) }}
			out := kernelCopies{dir: t.TempDir(), n: 1}
			plan, err := ubootBoot(ctx, &BootPlan{Source: SourceTryboot}, "the card's tryboot.txt", dev, out)
			if err != nil {
				t.Fatal(err)
			}
			if tc.noBoot != "" {
				if !strings.Contains(plan.NoBoot, tc.noBoot) {
					t.Errorf("no boot %q, want %q", plan.NoBoot, tc.noBoot)
				}
				if left, _ := filepath.Glob(filepath.Join(out.dir, "*")); len(left) > 0 {
					t.Errorf("labels that did not load left kernel files: %v", left)
				}
				return
			}
			kernel, err := os.ReadFile(plan.Kernel)
			if err != nil || string(kernel) != tc.kernel || !strings.Contains(plan.Via, tc.via) || plan.NoBoot != "" {
				t.Errorf("kernel %q (%v), via %q, no boot %q; want %q via %q", kernel, err, plan.Via, plan.NoBoot, tc.kernel, tc.via)
			}
			if notes := strings.Join(plan.Notes, "\n"); !strings.Contains(notes, tc.note) {
				t.Errorf("notes %q, want %q", notes, tc.note)
			}
		})
	}
}

// TestUBootScansBootablePartitions: on an MBR, U-Boot's boot scan takes
// partition 1 when no partition is bootable or it is, and skips the disk's
// FAT on partition 1 when only others are (the active flag, or type 0xef);
// the tables are written by the real sfdisk.
func TestUBootScansBootablePartitions(t *testing.T) {
	t.Parallel()
	sfdisk := DefaultTools().Sfdisk
	if _, err := exec.LookPath(sfdisk); err != nil {
		t.Skip("sfdisk not installed (apt-get install fdisk)")
	}
	for _, tc := range []struct {
		name, parts, skip string
	}{
		{"none bootable: partition 1", "start=2048, size=8192, type=c\nstart=10240, type=83\n", ""},
		{"partition 1 bootable", "start=2048, size=8192, type=c, bootable\nstart=10240, type=83\n", ""},
		{"both bootable: partition 1 first", "start=2048, size=8192, type=c, bootable\nstart=10240, type=83, bootable\n", ""},
		{"only partition 2 bootable", "start=2048, size=8192, type=c\nstart=10240, type=83, bootable\n", "bootable partitions (MBR active flag or type 0xef): 2, not partition 1"},
		{"partition 2 an EFI system partition", "start=2048, size=8192, type=c\nstart=10240, type=ef\n", ": 2, not partition 1"},
	} {
		img := filepath.Join(t.TempDir(), "ssd.img")
		if err := NewBlankDisk(img, 32<<20); err != nil {
			t.Fatal(err)
		}
		c := exec.Command(sfdisk, "--no-reread", img)
		c.Stdin = strings.NewReader("label: dos\n" + tc.parts)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s: sfdisk: %v: %s", tc.name, err, out)
		}
		why, err := ubootSkipsPartition1(img)
		if err != nil || (tc.skip == "") != (why == "") || !strings.Contains(why, tc.skip) {
			t.Errorf("%s: %q (%v), want %q", tc.name, why, err, tc.skip)
		}
	}
	gpt := filepath.Join(t.TempDir(), "gpt.img")
	NewBlankDisk(gpt, 32<<20)
	c := exec.Command(sfdisk, "--no-reread", gpt)
	c.Stdin = strings.NewReader("label: gpt\nstart=2048, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart=10240, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk gpt: %v: %s", err, out)
	}
	if why, err := ubootSkipsPartition1(gpt); why != "" || err != nil {
		t.Errorf("a GPT with the ESP first: %q (%v)", why, err)
	}
}
