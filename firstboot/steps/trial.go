package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/engine"
)

type trialStep struct{}

// NewTrial boots NixOS from the SSD once before anything depends on it.
// With an order that tries the card first (0xf41) it puts U-Boot and the
// armstub from the installed system's nixpkgs under nixpi/trial/ and a
// tryboot.txt that starts them, and reboots with the bootloader's one-shot
// tryboot flag: U-Boot finds the SSD's extlinux.conf over USB. Any crash,
// hang or power cycle comes back to the card's config.txt. With USB first
// a plain reboot boots the SSD, and the card is the fallback. Either way
// the installed NixOS confirms (confirm), and only then is the card
// retired.
func NewTrial() engine.Step { return trialStep{} }

func (trialStep) Name() string    { return "trial" }
func (trialStep) Needs() []string { return []string{"eeprom"} }
func (trialStep) Describe() string {
	return "booting NixOS from the SSD once, on trial: the card is retired only when NixOS confirms"
}

func (trialStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	ho := handOver(env)
	switch {
	case ho.Confirmed != nil:
		return true, fmt.Sprintf("NixOS confirmed that it booted from the SSD in boot %d", ho.Confirmed.Boot), nil
	case env.OnNixOS:
		return true, "this is NixOS, booted from the SSD", nil
	case ho.TrialBoot > 0:
		return false, fmt.Sprintf("the trial boot requested in boot %d never confirmed", ho.TrialBoot), nil
	}
	return false, "NixOS on the SSD has not booted yet", nil
}

// NotTaken is the card booting again after a trial that never confirmed:
// U-Boot found no disk, the kernel stopped, or the Pi was powered off.
func (trialStep) NotTaken(env *engine.Env, requestedIn int, why string) error {
	return engine.WithHint(
		fmt.Errorf("the SSD did not boot NixOS: the trial boot requested in boot %d never confirmed (%s); the card still boots Raspberry Pi OS and nothing was retired", requestedIn, why),
		"check the SSD: connect it directly to a blue USB 3 port (not through a hub) and give it its own power if its enclosure has a socket; "+
			"an enclosure with a JMicron or other UAS bridge may need usb-storage.quirks=VID:PID:u in nixos.kernel_params; "+
			"an HDMI screen or serial console shows where the trial boot stops; then delete "+cardpath.Failed+" on the card and power the Pi off and on to try again")
}

func (trialStep) Run(ctx context.Context, env *engine.Env) error {
	if env.OnNixOS {
		return errors.New("trial: runs on the card's Raspberry Pi OS, not on NixOS")
	}
	if err := requireNewSystemMounted(env); err != nil {
		return err
	}
	ho := handOver(env)
	partuuid, err := cardPartUUID(ctx, env)
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(filepath.Join(env.Path(env.BootDir), cardpath.Binary))
	if err != nil {
		return fmt.Errorf("trial: the service binary on the card: %w", err)
	}
	// The confirm unit runs the card's own binary, copied to the SSD: one
	// retirement code path, whichever side finishes the hand-over.
	ssd := env.Path(installRoot)
	if err := writeFileSynced(filepath.Join(ssd, cardpath.SSDBinary), bin, 0o755); err != nil {
		return fmt.Errorf("trial: %w", err)
	}
	rec, err := json.Marshal(cardpath.TrialRecord{V: 1, CardPartUUID: partuuid, System: env.State.SystemPath})
	if err != nil {
		return err
	}
	if err := writeFileSynced(filepath.Join(ssd, cardpath.SSDTrial), append(rec, '\n'), 0o644); err != nil {
		return fmt.Errorf("trial: %w", err)
	}
	ho.CardPartUUID, ho.TrialBoot = partuuid, env.Boot
	order := wantedOrder(env).Value
	if !eeprom.SDBeforeUSB(order) {
		ho.Trybooted = false
		env.RequestReboot(fmt.Sprintf("boot NixOS from the SSD (BOOT_ORDER %s tries USB first; the card is the fallback)", order))
		return nil
	}
	if err := writeTrialFiles(env); err != nil {
		return err
	}
	ho.Trybooted = true
	env.Logf("trial boot requested: the next boot, and only that one, starts U-Boot from %s, which boots NixOS from the SSD", cardpath.TryBoot)
	env.RequestTrialReboot("try NixOS on the SSD once (tryboot); any failure comes back to this card")
	return nil
}

// trybootTxt makes the card's firmware start U-Boot, as the SSD's own
// config.txt does (sd-image-aarch64.nix's settings), with explicit paths
// under nixpi/trial/. The card's own device tree is the Pi's.
const trybootTxt = `# nixpi: the trial boot of NixOS on the SSD. The firmware reads this file
# instead of config.txt for one boot after "reboot '0 tryboot'"; NixOS
# removes it once it has confirmed.
[all]
arm_64bit=1
enable_uart=1
avoid_warnings=1
kernel=` + cardpath.TrialUBoot + `
armstub=` + cardpath.TrialArmstub + `
enable_gic=1
disable_overscan=1
arm_boost=1
`

// writeTrialFiles puts U-Boot and the armstub the firmware step put on the
// SSD (from the same store paths) under nixpi/trial/, then tryboot.txt,
// last: a tryboot.txt never names a file that is not there.
func writeTrialFiles(env *engine.Env) error {
	card := env.Path(env.BootDir)
	for name, dst := range map[string]string{"u-boot-rpi4.bin": cardpath.TrialUBoot, "armstub8-gic.bin": cardpath.TrialArmstub} {
		src := env.State.Firmware[name]
		if src == "" {
			return fmt.Errorf("trial: the firmware step recorded no %s", name)
		}
		data, err := os.ReadFile(env.Path(src))
		if err != nil {
			return fmt.Errorf("trial: %w", err)
		}
		if len(data) == 0 {
			return fmt.Errorf("trial: %s is empty", src)
		}
		if err := writeBootFile(filepath.Join(card, dst), data); err != nil {
			return fmt.Errorf("trial: %w", err)
		}
	}
	return writeBootFile(filepath.Join(card, cardpath.TryBoot), []byte(trybootTxt))
}

// removeTrialFiles takes the trial's files off the card once NixOS has
// confirmed: they only ever serve one boot.
func removeTrialFiles(card string) error {
	if err := os.Remove(filepath.Join(card, cardpath.TryBoot)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.RemoveAll(filepath.Join(card, cardpath.TrialDir)); err != nil {
		return err
	}
	return syncDir(card)
}

// cardPartUUID is the PARTUUID of the partition mounted at the boot
// directory: how the SSD's NixOS finds the card.
func cardPartUUID(ctx context.Context, env *engine.Env) (string, error) {
	mounts, err := disk.ReadMountInfo(env.Root)
	if err != nil {
		return "", err
	}
	m := disk.MountAt(mounts, env.Path(env.BootDir))
	if m == nil {
		return "", fmt.Errorf("trial: nothing is mounted at %q: the card's FAT must be", env.BootDir)
	}
	devs, err := disk.List(ctx, env.Run, env.Tools.Lsblk, m.Source)
	if err != nil {
		return "", fmt.Errorf("trial: %w", err)
	}
	d := disk.Find(devs, m.Source)
	if d == nil || !disk.ValidMBRPartUUID(d.PartUUID) {
		got := ""
		if d != nil {
			got = d.PartUUID
		}
		return "", engine.WithHint(fmt.Errorf("trial: the card's FAT %q has PARTUUID %q, not an MBR one the installed NixOS can find it by", m.Source, got),
			"write a Raspberry Pi OS image (MBR) to the card")
	}
	return d.PartUUID, nil
}

// writeFileSynced writes path through a temporary file, fsyncs it and its
// directory, so a power cut leaves the old file or the whole new one.
func writeFileSynced(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".nixpi-tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Chmod(mode), f.Sync(), f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
