package steps

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
)

// MinUSBBootVersion is the BUILD_TIMESTAMP of pieeprom-2020-09-03.bin
// (2020-09-03 12:11:43 UTC): raspberrypi/rpi-eeprom's releases.md says USB
// mass storage boot requires the 2020-09-03 EEPROM images; older
// bootloaders boot from the SD card and the network only.
const MinUSBBootVersion = 1599135103

// Where Raspberry Pi OS's rpi-eeprom package keeps the Pi 4 bootloader
// images and the file that selects the release (rpi-eeprom-update reads the
// same).
const (
	bootloaderDir    = "/lib/firmware/raspberrypi/bootloader-2711"
	eepromUpdateConf = "/etc/default/rpi-eeprom-update"
	deviceTreeCompat = "/proc/device-tree/compatible"
)

const updateBootloaderHint = "update the bootloader on this card's Raspberry Pi OS (sudo apt-get install rpi-eeprom && sudo rpi-eeprom-update -a, then reboot), " +
	"or write Raspberry Pi Imager's \"Misc utility images > Bootloader\" to a spare card and boot it once; then power the Pi off and on to continue"

type eepromStep struct{}

// NewEEPROM sets the bootloader's BOOT_ORDER to boot.boot_order, keeping
// every other setting, by staging an update on the card's FAT (pieeprom.upd,
// pieeprom.sig, recovery.bin) that the boot ROM flashes on the next boot.
func NewEEPROM() engine.Step { return eepromStep{} }

func (eepromStep) Name() string    { return "eeprom" }
func (eepromStep) Needs() []string { return []string{"verify"} }
func (eepromStep) Describe() string {
	return "setting the bootloader's BOOT_ORDER so the Pi boots the SSD; the update is flashed on the next boot"
}

// board is what the device tree says the machine is.
type board struct {
	pi4    bool   // a BCM2711: Pi 4, 400, CM4
	compat string // the compatible strings, for messages
}

// readBoard refuses a Raspberry Pi that is not a BCM2711: the Pi 5 has its
// own EEPROM format and boot modes, earlier models no EEPROM. A machine that
// is no Raspberry Pi at all (the QEMU run) is staged for as if it were a
// Pi 4: the files are inert there, and the run can check them.
func readBoard(env *engine.Env) (board, error) {
	data, err := os.ReadFile(env.Path(deviceTreeCompat))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return board{}, fmt.Errorf("read %q: %w", deviceTreeCompat, err)
	}
	compat := strings.Split(strings.Trim(string(data), "\x00\n"), "\x00")
	b := board{compat: strings.Join(compat, ", ")}
	for _, c := range compat {
		if c == "brcm,bcm2711" {
			b.pi4 = true
			return b, nil
		}
	}
	for _, c := range compat {
		if strings.HasPrefix(c, "raspberrypi,") || strings.HasPrefix(c, "brcm,bcm27") {
			return b, engine.WithHint(
				fmt.Errorf("this board (%s) is not a BCM2711: nixpi sets the Raspberry Pi 4's EEPROM only (the Pi 5's has another format and other boot modes); nothing was staged", b.compat),
				"use a Raspberry Pi 4, 400 or Compute Module 4; on this board set the boot order yourself (sudo rpi-eeprom-config --edit)")
		}
	}
	return b, nil
}

// bootloader is the running bootloader as vcgencmd reports it.
type bootloader struct {
	config  []byte
	version int64 // build timestamp; 0 when unknown (not a Pi)
}

func (b bootloader) String() string {
	if b.version == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%s (build %d)", eeprom.VersionDate(b.version), b.version)
}

// readBootloader runs vcgencmd bootloader_config and bootloader_version. Off
// a Pi without vcgencmd the config is empty, which makes Stage start from
// the image's own config, as rpi-eeprom-update does for a factory config.
func readBootloader(ctx context.Context, env *engine.Env, b board) (bootloader, error) {
	if !env.Exists(env.Tools.Vcgencmd) {
		if b.pi4 {
			return bootloader{}, engine.WithHint(fmt.Errorf("vcgencmd not found at %s: cannot read the bootloader's config", env.Tools.Vcgencmd),
				"install it on the card's Raspberry Pi OS (apt-get install raspi-utils; libraspberrypi-bin before Bookworm)")
		}
		return bootloader{}, nil
	}
	cfg, err := env.Run.Output(ctx, env.Tools.Vcgencmd, "bootloader_config")
	if err != nil {
		return bootloader{}, fmt.Errorf("read the bootloader config: %w", err)
	}
	out, err := env.Run.Output(ctx, env.Tools.Vcgencmd, "bootloader_version")
	if err != nil {
		return bootloader{}, fmt.Errorf("read the bootloader version: %w", err)
	}
	v, err := eeprom.ParseBootloaderVersion(out)
	if err != nil {
		// Firmware older than the timestamp line prints the build date first.
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		t, perr := time.Parse("2006/01/02 15:04:05", strings.TrimSpace(first))
		if perr != nil {
			return bootloader{}, err
		}
		v = t.Unix()
	}
	return bootloader{config: cfg, version: v}, nil
}

func wantedOrder(env *engine.Env) eeprom.Setting {
	order := config.Default().Boot.BootOrder
	if env.Config != nil && env.Config.Boot.BootOrder != "" {
		order = env.Config.Boot.BootOrder
	}
	return eeprom.Setting{Key: "BOOT_ORDER", Value: order}
}

// alreadySet checks a bootloader that has the wanted order already is one
// that boots from USB; it reports whether nothing needs staging.
func alreadySet(bl bootloader, want eeprom.Setting) (bool, error) {
	if !eeprom.Has(bl.config, want) {
		return false, nil
	}
	if bl.version != 0 && bl.version < MinUSBBootVersion {
		return false, engine.WithHint(fmt.Errorf("the running bootloader, %s, has %s but is older than %s, the first release that boots from USB mass storage",
			bl, want, eeprom.VersionDate(MinUSBBootVersion)), updateBootloaderHint)
	}
	return true, nil
}

func (s eepromStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	b, err := readBoard(env)
	if err != nil {
		return false, "", err
	}
	bl, err := readBootloader(ctx, env, b)
	if err != nil {
		return false, "", err
	}
	want := wantedOrder(env)
	if ok, err := alreadySet(bl, want); err != nil || ok {
		return ok, fmt.Sprintf("the running bootloader (%s) already has %s", bl, want), err
	}
	if why, ok := stagedUpdate(env, want); ok {
		return true, why, nil
	}
	return false, fmt.Sprintf("the running bootloader (%s) does not have %s", bl, want), nil
}

// stagedUpdate reports an update already on the card that carries want,
// with a .sig that matches it and recovery.bin to flash it.
func stagedUpdate(env *engine.Env, want eeprom.Setting) (string, bool) {
	dir := env.Path(env.BootDir)
	upd, err := os.ReadFile(filepath.Join(dir, cardpath.EEPROMUpdate))
	if err != nil {
		return "", false
	}
	im, err := eeprom.Parse(upd)
	if err != nil || !eeprom.Has(im.Config(), want) {
		return "", false
	}
	sig, err := os.ReadFile(filepath.Join(dir, cardpath.EEPROMSig))
	if err != nil || !eeprom.SigMatches(sig, upd) {
		return "", false
	}
	if _, err := os.Stat(filepath.Join(dir, cardpath.Recovery)); err != nil {
		return "", false
	}
	return fmt.Sprintf("an update with %s is staged on the card; it is flashed on the next boot", want), true
}

func (s eepromStep) Run(ctx context.Context, env *engine.Env) error {
	b, err := readBoard(env)
	if err != nil {
		return err
	}
	if !b.pi4 {
		env.Logf("not a Raspberry Pi (device tree: %q): staging as for a Pi 4, where the files would take effect", b.compat)
	}
	bl, err := readBootloader(ctx, env, b)
	if err != nil {
		return err
	}
	want := wantedOrder(env)
	ho := handOver(env)
	ho.BootOrder, ho.Bootloader = want.Value, bl.String()
	if ok, err := alreadySet(bl, want); err != nil || ok {
		ho.EEPROM = fmt.Sprintf("the running bootloader (%s) already has %s: nothing staged", bl, want)
		return err
	}
	bootDir := env.Path(env.BootDir)
	if on, line := writeProtected(filepath.Join(bootDir, cardpath.ConfigTxt)); on {
		hint := "set eeprom_write_protect=0 in config.txt on the card (and remove the /WP jumper, if fitted), then power the Pi off and on"
		if order := currentOrder(bl); strings.Contains(order, "4") {
			hint += fmt.Sprintf(", or set boot.boot_order to the bootloader's current order, %s", order)
		}
		return engine.WithHint(fmt.Errorf("the EEPROM is write-protected (config.txt line %d: eeprom_write_protect=1), so the update that sets %s would not be flashed; nothing was staged", line, want), hint)
	}
	if err := removeTornStaging(bootDir); err != nil {
		return err
	}
	releases, err := releaseDirs(env)
	if err != nil {
		return err
	}
	res, err := eeprom.Stage(eeprom.StageOptions{
		BootloaderDir:  env.Path(bootloaderDir),
		Releases:       releases,
		CurrentConfig:  bl.config,
		CurrentVersion: bl.version,
		Want:           []eeprom.Setting{want},
		TargetDir:      bootDir,
		Now:            env.Clock(),
		MinVersion:     MinUSBBootVersion,
		Wrote:          func(name string) { env.Crash("eeprom: wrote " + name) },
	})
	if errors.Is(err, eeprom.ErrTooOld) {
		return engine.WithHint(fmt.Errorf("%w; %s is the first release that boots from USB mass storage", err, eeprom.VersionDate(MinUSBBootVersion)),
			"update the rpi-eeprom package on the card's Raspberry Pi OS (apt-get install rpi-eeprom), then power the Pi off and on")
	}
	if err != nil {
		return err
	}
	ho.EEPROM = res.Reason
	ho.Staged = nil
	if res.Staged {
		ho.Staged = []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery}
	}
	env.Logf("%s", res.Reason)
	env.Logf("bootloader config staged:\n%s", res.Config)
	return nil
}

// handOver returns the state's hand-over record, creating it.
func handOver(env *engine.Env) *journal.HandOver {
	if env.State.HandOver == nil {
		env.State.HandOver = &journal.HandOver{}
	}
	return env.State.HandOver
}

func currentOrder(bl bootloader) string {
	v, _ := eeprom.Lookup(bl.config, "BOOT_ORDER")
	return v
}

// writeProtected finds an active eeprom_write_protect=1 in config.txt: the
// bootloader then sets the EEPROM's write-protect bits, and with the /WP pin
// low (which Linux cannot see) recovery.bin cannot flash.
func writeProtected(configTxt string) (bool, int) {
	data, err := os.ReadFile(configTxt)
	if err != nil {
		return false, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && strings.TrimSpace(k) == "eeprom_write_protect" && strings.TrimSpace(v) == "1" {
			return true, n
		}
	}
	return false, 0
}

// removeTornStaging deletes the temporary files a power cut inside Stage
// can leave at the card's root (renameio names them ".<name><digits>").
func removeTornStaging(bootDir string) error {
	for _, name := range []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery} {
		torn, err := filepath.Glob(filepath.Join(bootDir, "."+name+"[0-9]*"))
		if err != nil {
			return err
		}
		for _, t := range torn {
			if err := os.Remove(t); err != nil {
				return fmt.Errorf("remove a half-written update file: %w", err)
			}
		}
	}
	return nil
}

// releaseDirs reads FIRMWARE_RELEASE_STATUS from /etc/default/rpi-eeprom-update
// as rpi-eeprom-update does: "default" unless set; the old names critical and
// stable (and beta) are the directories default and latest now. For default,
// latest is the fallback when the running bootloader is newer than every
// default image (no downgrade).
func releaseDirs(env *engine.Env) ([]string, error) {
	status := "default"
	data, err := os.ReadFile(env.Path(eepromUpdateConf))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "))
		if v, ok := strings.CutPrefix(line, "FIRMWARE_RELEASE_STATUS="); ok {
			if i := strings.Index(v, " #"); i >= 0 {
				v = v[:i]
			}
			status = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	switch status {
	case "critical", "":
		status = "default"
	case "stable", "beta":
		status = "latest"
	}
	if status != path.Base(status) || status == "." || status == ".." {
		return nil, engine.WithHint(fmt.Errorf("%s: FIRMWARE_RELEASE_STATUS=%q is not a release directory name", eepromUpdateConf, status),
			"set it to default or latest")
	}
	if status == "default" {
		return []string{"default", "latest"}, nil
	}
	return []string{status}, nil
}
