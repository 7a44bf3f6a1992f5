package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/system"
)

// ext4CardImage writes a card image whose partition 2 is an ext4 made from
// the files in root (mkfs.ext4 -d), as a Raspberry Pi OS root.
func ext4CardImage(t *testing.T, root map[string]string) string {
	t.Helper()
	tools := DefaultTools()
	for _, tool := range []string{tools.MkfsExt4, tools.Debugfs} {
		if _, err := os.Stat(tool); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install e2fsprogs)", tool)
		}
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "root")
	for name, text := range root {
		p := filepath.Join(tree, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755)
	rootImg := filepath.Join(dir, "root.img")
	if out, err := exec.Command(tools.MkfsExt4, "-q", "-F", "-O", "^64bit,^huge_file", "-d", tree, rootImg, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	img := filepath.Join(dir, "card.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(1<<20 + 8<<20)
	f.WriteAt(EncodeMBR(0x1234abcd, []Partition{{Type: 0x0c, Offset: 512 << 10, Size: 512 << 10}, {Type: 0x83, Offset: 1 << 20, Size: 8 << 20}}), 0)
	if err := copySparse(f, 1<<20, rootImg); err != nil {
		t.Fatal(err)
	}
	return img
}

func TestInstallVcgencmd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, root := range map[string]map[string]string{
		"a Debian root":              {"etc/os-release": "ID=debian\n"},
		"Raspberry Pi OS's replaced": {"usr/bin/vcgencmd": "the real vcgencmd, which needs a VideoCore\n"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			card := ext4CardImage(t, root)
			if err := InstallVcgencmd(ctx, system.ExecRunner{}, DefaultTools(), card); err != nil {
				t.Fatal(err)
			}
			device := card + "?offset=1048576"
			out, err := exec.Command(DefaultTools().Debugfs, "-R", "cat "+VcgencmdPath, device).Output()
			if err != nil || string(out) != standInVcgencmd {
				t.Errorf("vcgencmd on the card: %q (%v)", out, err)
			}
			if out, err := exec.Command("/usr/sbin/e2fsck", "-fn", device).CombinedOutput(); err != nil {
				t.Errorf("e2fsck after the write: %v\n%s", err, out)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(card), "stand-in-vcgencmd")); !os.IsNotExist(err) {
				t.Errorf("the script's temporary copy is left beside the card (%v)", err)
			}
		})
	}
}

// TestStandInVcgencmdAnswers runs the script against a directory laid out
// as qemu_fw_cfg's sysfs, with what VM.fwCfg writes.
func TestStandInVcgencmdAnswers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	state := &EEPROM{Config: []byte("[all]\nBOOT_ORDER=0xf1\n"), Timestamp: 1754301600}
	v := &VM{Dir: dir, EEPROM: state}
	args, err := v.fwCfg()
	if err != nil {
		t.Fatal(err)
	}
	sysfs := filepath.Join(dir, "by_name")
	for _, a := range args {
		name, file, _ := strings.Cut(strings.TrimPrefix(a, "name="), ",file=")
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(sysfs, name), 0o755)
		os.WriteFile(filepath.Join(sysfs, name, "raw"), data, 0o644)
	}
	script := filepath.Join(dir, "vcgencmd")
	os.WriteFile(script, []byte(strings.Replace(standInVcgencmd, "/sys/firmware/qemu_fw_cfg/by_name/", sysfs+"/", 1)), 0o755)
	for cmd, want := range map[string]string{"bootloader_config": string(state.Config), "bootloader_version": state.VersionText()} {
		out, err := exec.Command("/bin/sh", script, cmd).CombinedOutput()
		if err != nil || string(out) != want {
			t.Errorf("vcgencmd %s: %q (%v), want %q", cmd, out, err, want)
		}
	}
	if out, err := exec.Command("/bin/sh", script, "get_throttled").CombinedOutput(); err == nil || !strings.Contains(string(out), "stand-in vcgencmd") {
		t.Errorf("vcgencmd get_throttled: %q (%v), want a failure naming the stand-in", out, err)
	}
	if !strings.Contains(standInVcgencmd, "stand-in vcgencmd of nixpi's QEMU harness: plays the Pi 4 bootloader") {
		t.Error("the script does not say what it is")
	}
	argv := strings.Join((&VM{Tools: DefaultTools()}).Argv("/k", "", "c", "/q", args...), " ")
	if !strings.Contains(argv, "-fw_cfg name=opt/nixpi/bootloader_config,file="+dir+"/eeprom-bootloader_config -fw_cfg name=opt/nixpi/bootloader_version,file=") {
		t.Errorf("QEMU's argv has no fw_cfg files: %s", argv)
	}
}
