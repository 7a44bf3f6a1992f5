package steps

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/engine"
)

// MinUSBBootVersion is the BUILD_TIMESTAMP of pieeprom-2020-09-03.bin
// (2020-09-03 12:11:43 UTC): raspberrypi/rpi-eeprom's releases.md says USB
// mass storage boot requires the 2020-09-03 EEPROM images; older
// bootloaders boot from the SD card and the network only.
const MinUSBBootVersion = 1599135103

// MinTrybootVersion is the BUILD_TIMESTAMP of pieeprom-2020-12-11.bin, the
// first stable Pi 4 bootloader with tryboot (firmware-2711/release-notes.md:
// "2020-12-14 - Promote pieeprom-2020-12-11.bin to stable ... Feature
// freeze to support stable release of BCM2711 XHCI boot, tryboot"; the
// 2020-10-28 beta had it first). An older bootloader would ignore the trial
// boot's flag and boot the card again, so it is updated first, like one
// without the boot order.
const MinTrybootVersion = 1607685317

// Where Raspberry Pi OS's rpi-eeprom package keeps the Pi 4 bootloader
// images and the file that selects the release (rpi-eeprom-update reads the
// same).
const (
	bootloaderDir    = "/lib/firmware/raspberrypi/bootloader-2711"
	eepromUpdateConf = "/etc/default/rpi-eeprom-update"
	deviceTreeCompat = "/proc/device-tree/compatible"
	// eepromMD5sums is dpkg's record of the files the rpi-eeprom package
	// installed: an image that differs from it was changed after the
	// install (a damaged card) and must not be flashed.
	eepromMD5sums = "/var/lib/dpkg/info/rpi-eeprom.md5sums"
)

// packageCheck returns the Stage check against eepromMD5sums. Without that
// file (the images did not come from the package: a hand-made root) the
// images are staged as found, and the log says so.
func packageCheck(env *engine.Env) (func(path string, data []byte) error, error) {
	data, err := os.ReadFile(env.Path(eepromMD5sums))
	if errors.Is(err, os.ErrNotExist) {
		env.Logf("%s not found: the bootloader images were not installed by the rpi-eeprom package, so they are not checked against it", eepromMD5sums)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sums := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if sum, name, ok := strings.Cut(strings.TrimSpace(line), "  "); ok {
			sums["/"+strings.TrimPrefix(strings.TrimSpace(name), "/")] = strings.ToLower(sum)
		}
	}
	return func(path string, data []byte) error {
		rel, err := filepath.Rel(env.Root, path)
		if err != nil {
			return err
		}
		name := "/" + filepath.ToSlash(rel)
		want, ok := sums[name]
		if !ok {
			return engine.WithHint(fmt.Errorf("%s is not listed in %s: it did not come from the rpi-eeprom package", name, eepromMD5sums),
				"reinstall the package (sudo apt-get install --reinstall rpi-eeprom) or remove the file")
		}
		got := md5.Sum(data)
		if hex.EncodeToString(got[:]) != want {
			return engine.WithHint(fmt.Errorf("%s differs from what the rpi-eeprom package installed (md5 %x, the package lists %s): the card may be damaged", name, got, want),
				"reinstall the package (sudo apt-get install --reinstall rpi-eeprom), or write the image to another card")
		}
		return nil
	}, nil
}

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

// minVersion is the oldest bootloader the hand-over can count on for want:
// one with tryboot when the card comes first (the trial boot needs it), one
// that boots from USB otherwise.
func minVersion(want eeprom.Setting) int64 {
	if eeprom.SDBeforeUSB(want.Value) {
		return MinTrybootVersion
	}
	return MinUSBBootVersion
}

// inEffect says whether the running bootloader already does what the
// hand-over needs: every BOOT_ORDER assignment in force is want, and it is
// new enough (an unknown version, 0, is a machine that is no Pi).
func inEffect(bl bootloader, want eeprom.Setting) (bool, string) {
	if !eeprom.Has(bl.config, want) {
		return false, fmt.Sprintf("the running bootloader (%s) does not have %s", bl, want)
	}
	if bl.version != 0 && bl.version < minVersion(want) {
		return false, fmt.Sprintf("the running bootloader (%s) has %s but is older than %s, the first release with the trial boot (tryboot) and USB boot", bl, want, eeprom.VersionDate(minVersion(want)))
	}
	return true, fmt.Sprintf("the running bootloader (%s) already has %s", bl, want)
}

// noBootloader is a machine that is no Raspberry Pi and has no vcgencmd:
// there is no EEPROM to set (a development machine).
func noBootloader(env *engine.Env, b board) bool {
	return !b.pi4 && !env.Exists(env.Tools.Vcgencmd)
}

func (s eepromStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	b, err := readBoard(env)
	if err != nil {
		return false, "", err
	}
	if noBootloader(env, b) {
		return true, fmt.Sprintf("not a Raspberry Pi (device tree: %q) and no vcgencmd: no bootloader EEPROM to set", b.compat), nil
	}
	bl, err := readBootloader(ctx, env, b)
	if err != nil {
		return false, "", err
	}
	ok, why := inEffect(bl, wantedOrder(env))
	return ok, why, nil
}

// NotTaken is an update staged before the reboot that the bootloader does
// not run now: recovery.bin did not flash it.
func (eepromStep) NotTaken(env *engine.Env, requestedIn int, why string) error {
	return engine.WithHint(
		fmt.Errorf("the bootloader update staged in boot %d was not flashed: %s; the card still boots Raspberry Pi OS and nothing depends on the update yet", requestedIn, why),
		"the EEPROM may be write-protected (the /WP jumper or pin, eeprom_write_protect=1 in config.txt or a file it includes), or the board has no EEPROM (a CM4S); "+
			"remove the protection, or set the boot order yourself (sudo rpi-eeprom-config --edit, then reboot), then delete "+cardpath.Failed+" on the card and power the Pi off and on")
}

func (s eepromStep) Run(ctx context.Context, env *engine.Env) error {
	b, err := readBoard(env)
	if err != nil {
		return err
	}
	if noBootloader(env, b) {
		return nil
	}
	bl, err := readBootloader(ctx, env, b)
	if err != nil {
		return err
	}
	want := wantedOrder(env)
	ho := handOver(env)
	ho.BootOrder, ho.Bootloader = want.Value, bl.String()
	if ok, why := inEffect(bl, want); ok {
		ho.EEPROM = why + ": nothing staged"
		return nil
	}
	bootDir := env.Path(env.BootDir)
	readCard := func(name string) (string, error) {
		data, err := os.ReadFile(filepath.Join(bootDir, filepath.FromSlash(name)))
		return string(data), err
	}
	if on, where := bootfiles.EEPROMWriteProtected(readCard, cardpath.ConfigTxt); on {
		hint := "set eeprom_write_protect=0 on the card (and remove the /WP jumper, if fitted), then power the Pi off and on"
		if order := currentOrder(bl); eeprom.ReachesUSB(order) == nil {
			hint += fmt.Sprintf(", or set boot.boot_order to the bootloader's current order, %s", order)
		}
		return engine.WithHint(fmt.Errorf("the EEPROM is write-protected (%s: eeprom_write_protect=1), so the update that sets %s would not be flashed; nothing was staged", where, want), hint)
	}
	if err := removeTornStaging(bootDir); err != nil {
		return err
	}
	releases, err := releaseDirs(env)
	if err != nil {
		return err
	}
	check, err := packageCheck(env)
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
		MinVersion:     minVersion(want),
		Check:          check,
		Wrote:          func(name string) { env.Crash("eeprom: wrote " + name) },
	})
	if errors.Is(err, eeprom.ErrTooOld) {
		return engine.WithHint(fmt.Errorf("%w; %s is the first release the hand-over can count on (USB boot and tryboot)", err, eeprom.VersionDate(minVersion(want))),
			"update the rpi-eeprom package on the card's Raspberry Pi OS (apt-get install rpi-eeprom), then power the Pi off and on")
	}
	if err != nil {
		return err
	}
	ho.EEPROM = res.Reason
	ho.Staged = nil
	if !res.Staged {
		return nil
	}
	ho.Staged = []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery}
	env.Logf("%s", res.Reason)
	env.Logf("bootloader config staged:\n%s", res.Config)
	// Nothing may depend on the new order before the bootloader runs it:
	// the boot ROM flashes the update on this reboot, and the probe reads
	// the order back in the next boot.
	env.RequestReboot("let the boot ROM flash the bootloader update, then read " + want.String() + " back")
	return nil
}

func currentOrder(bl bootloader) string {
	v, _ := eeprom.Lookup(bl.config, "BOOT_ORDER")
	return v
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
