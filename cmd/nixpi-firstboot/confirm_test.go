package main

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/steps"
)

const confirmCard = "/run/nixpi/card"

// asNixOSAfterTrial makes the device the installed NixOS on its trial boot:
// the trial record on the SSD, the card (MBR signature 1234abcd) in sysfs,
// its FAT as the card's service left it when it asked for the tryboot.
func (d *device) asNixOSAfterTrial() {
	d.t.Helper()
	d.put("/"+cardpath.SSDTrial, `{"v":1,"card_partuuid":"1234abcd-01","system":"/nix/store/aaaa-nixos-system"}`+"\n")
	d.put("/proc/sys/kernel/random/boot_id", "nixos-boot\n")
	d.put("/proc/stat", "btime 1764640000\n")
	os.MkdirAll(filepath.Join(d.root, "run"), 0o755)
	if err := os.Symlink("/nix/store/aaaa-nixos-system", filepath.Join(d.root, "run/current-system")); err != nil {
		d.t.Fatal(err)
	}
	sys := filepath.Join(d.root, "sys/devices/platform/mmc/block/mmcblk0")
	os.MkdirAll(filepath.Join(sys, "mmcblk0p1"), 0o755)
	d.put(strings.TrimPrefix(filepath.Join(sys, "mmcblk0p1", "partition"), d.root), "1\n")
	os.MkdirAll(filepath.Join(d.root, "sys/class/block"), 0o755)
	os.Symlink(sys, filepath.Join(d.root, "sys/class/block/mmcblk0"))
	os.Symlink(filepath.Join(sys, "mmcblk0p1"), filepath.Join(d.root, "sys/class/block/mmcblk0p1"))
	mbr := make([]byte, 512)
	binary.LittleEndian.PutUint32(mbr[440:], 0x1234abcd)
	mbr[510], mbr[511] = 0x55, 0xaa
	d.put("/dev/mmcblk0", string(mbr))

	for name, data := range map[string]string{
		"start4.elf": "start4", "fixup4.dat": "fixup4", "config.txt": "[all]\narm_64bit=1\n", "cmdline.txt": "console=tty1 root=PARTUUID=1234abcd-02\n",
		"kernel8.img": "kernel", cardpath.TryBoot: "[all]\nkernel=" + cardpath.TrialUBoot + "\n", cardpath.TrialUBoot: "u-boot",
		cardpath.Config: "schema = 1\n\n[system]\nhostname = \"garden\"\n\n[[users]]\nname = \"alice\"\nssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb1bCm6DZZiwDHR6GkqAHP8CjUJ7VO5S2ekvMjr9xBv alice@laptop\"]\n",
	} {
		d.put(filepath.Join(confirmCard, name), data)
	}
	state := journal.State{Steps: stepNames(), HandOver: &journal.HandOver{BootOrder: "0xf41", TrialBoot: 3, Trybooted: true, CardPartUUID: "1234abcd-01"}}
	raw, _ := json.Marshal(state)
	w, err := journal.Create(filepath.Join(d.root, confirmCard))
	if err != nil {
		d.t.Fatal(err)
	}
	defer w.Close()
	at := time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)
	for _, e := range []journal.Entry{
		{Step: "verify", Event: journal.Done, Boot: 3, BootID: "card-3"},
		{Step: "eeprom", Event: journal.Skip, Boot: 3, BootID: "card-3"},
		{Step: "trial", Event: journal.Start, Boot: 3, BootID: "card-3"},
		{Step: "trial", Event: journal.Reboot, Boot: 3, BootID: "card-3", Msg: "try NixOS on the SSD once (tryboot)"},
	} {
		e.Time, e.State = at, raw
		if err := w.Append(e); err != nil {
			d.t.Fatal(err)
		}
	}
}

func stepNames() []string {
	var names []string
	for _, s := range steps.All() {
		names = append(names, s.Name())
	}
	return names
}

// nixpi-firstboot confirm on the installed NixOS: it finds the card by the
// PARTUUID the trial recorded, mounts it, records the confirmation in the
// card's journal, retires the card, and removes the trial record (the
// unit's condition); a second run finds nothing to confirm.
func TestConfirmOnNixOS(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.asNixOSAfterTrial()
	code, out, errOut := d.cli("confirm")
	if code != exitOK {
		t.Fatalf("confirm: exit %d\n%s\n%s", code, out, errOut)
	}
	if got := strings.Join(d.mounts, "; "); got != "/dev/mmcblk0p1 "+confirmCard+"; umount "+confirmCard {
		t.Errorf("mounts: %s", got)
	}
	j, err := journal.ReadFile(filepath.Join(d.root, confirmCard))
	if err != nil {
		t.Fatal(err)
	}
	ho := journal.LastHandOver(j)
	if ho == nil || ho.Confirmed == nil || ho.Confirmed.System != "/nix/store/aaaa-nixos-system" || ho.Confirmed.Boot != 2 || !ho.Finished {
		t.Fatalf("hand-over after confirm: %+v", ho)
	}
	card := filepath.Join(d.root, confirmCard)
	for _, gone := range []string{"start4.elf", cardpath.TryBoot, cardpath.TrialDir} {
		if _, err := os.Stat(filepath.Join(card, gone)); err == nil {
			t.Errorf("%s is still at the card's root", gone)
		}
	}
	if _, err := os.Stat(filepath.Join(card, cardpath.Retired, "start4.elf")); err != nil {
		t.Errorf("start4.elf was not retired: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.root, cardpath.SSDTrial)); err == nil {
		t.Error("the trial record stays: the confirm unit would run on every boot")
	}
	for _, c := range d.run.Calls() {
		t.Errorf("NixOS ran %v: the confirm needs no Raspberry Pi OS tool", c)
	}
	if !strings.Contains(out, "NixOS booted from the SSD: confirmed at") {
		t.Errorf("stdout lacks the confirmation:\n%s", out)
	}
	if code, _, errOut := d.cli("confirm"); code != exitFailure || !strings.Contains(errOut, "no trial to confirm") {
		t.Errorf("second confirm: exit %d, %s", code, errOut)
	}
}

// The card is not in the Pi (taken out during the trial): confirm waits a
// bounded time, then fails, touching nothing.
func TestConfirmWithoutTheCard(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	d.asNixOSAfterTrial()
	d.put("/"+cardpath.SSDTrial, `{"v":1,"card_partuuid":"89abcdef-01"}`+"\n")
	code, _, errOut := d.cli("confirm")
	if code != exitFailure || !strings.Contains(errOut, "PARTUUID 89abcdef-01) is not here after 1m0s") || len(d.mounts) != 0 {
		t.Fatalf("confirm: exit %d, mounts %v, %s", code, d.mounts, errOut)
	}
	if _, err := os.Stat(filepath.Join(d.root, cardpath.SSDTrial)); err != nil {
		t.Error("the trial record went: the next boot could not confirm")
	}
}
