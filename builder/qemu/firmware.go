package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/system"
)

// The virt machine has no Raspberry Pi boot chain, so the harness plays it
// on the host before every boot (DESIGN.md §3): the boot ROM and
// recovery.bin (a staged EEPROM update), the EEPROM bootloader (BOOT_ORDER:
// the card, then USB), the firmware (config.txt, or tryboot.txt once after
// a reboot with '0 tryboot') and U-Boot (extlinux.conf). What it finds
// becomes QEMU's -kernel, -initrd and -append.

// EEPROM is the emulated Pi 4's bootloader EEPROM: what `vcgencmd
// bootloader_config` and `bootloader_version` report, and what BOOT_ORDER
// the bootloader boots by.
type EEPROM struct {
	// Config is the bootconf.txt the bootloader runs with.
	Config []byte
	// Timestamp is its build time (BUILD_TIMESTAMP, Unix seconds).
	Timestamp int64
}

// EEPROMFromImage is the state of a Pi 4 whose EEPROM holds image (a
// pieeprom-*.bin or a staged pieeprom.upd).
func EEPROMFromImage(image []byte) (*EEPROM, error) {
	im, err := eeprom.Parse(image)
	if err != nil {
		return nil, err
	}
	ts, _ := im.BuildTimestamp()
	return &EEPROM{Config: im.Config(), Timestamp: ts}, nil
}

// WithBootOrder is the same bootloader configured with another BOOT_ORDER:
// a scenario's Pi whose order does not reach USB (0xf1).
func (e *EEPROM) WithBootOrder(order string) (*EEPROM, error) {
	if err := eeprom.ValidateBootOrder(order); err != nil {
		return nil, err
	}
	cfg, err := eeprom.SetKeys(e.Config, eeprom.Setting{Key: "BOOT_ORDER", Value: order})
	if err != nil {
		return nil, err
	}
	return &EEPROM{Config: cfg, Timestamp: e.Timestamp}, nil
}

// defaultBootOrder is the bootloader's BOOT_ORDER when bootconf.txt sets
// none.
const defaultBootOrder = "0xf41"

// BootOrder is the BOOT_ORDER the bootloader runs with: the last one set
// outside a conditional section ([all] or before any section), as with
// config.txt's settings; the default when none is set.
func (e *EEPROM) BootOrder() string {
	order := defaultBootOrder
	if e == nil {
		return order
	}
	applies := true
	sc := bufio.NewScanner(bytes.NewReader(e.Config))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			applies = strings.EqualFold(line, "[all]")
			continue
		}
		if v, ok := strings.CutPrefix(line, "BOOT_ORDER="); ok && applies {
			order = strings.TrimSpace(v)
		}
	}
	return order
}

// VersionText is what `vcgencmd bootloader_version` prints on a Pi 4 with
// this bootloader: the build date, the version, the timestamp
// (eeprom.ParseBootloaderVersion reads that line).
func (e *EEPROM) VersionText() string {
	return fmt.Sprintf("%s\nversion stand-in-of-nixpi-qemu-harness (release)\ntimestamp %d\nupdate-time 0\ncapabilities 0x0000007f\n",
		time.Unix(e.Timestamp, 0).UTC().Format("2006/01/02 15:04:05"), e.Timestamp)
}

// EEPROMUpdate is a staged update the boot ROM flashed before a boot.
type EEPROMUpdate struct {
	Boot      int // the boot it came before
	BootOrder string
	Timestamp int64
}

// flashStaged does what a Pi 4's boot ROM and recovery.bin do before the
// bootloader starts, whatever BOOT_ORDER says: with recovery.bin,
// pieeprom.upd and a pieeprom.sig holding the update's sha256 (and its ts:
// line) at the card's FAT root, the update becomes the EEPROM's content and
// recovery.bin is renamed RECOVERY.000, so that it runs once. It returns
// the new state, or nil and why nothing was flashed ("" when nothing is
// staged).
func flashStaged(ctx context.Context, card *Card) (*EEPROM, string, error) {
	if _, err := card.ReadFile(ctx, cardpath.Recovery); errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	} else if err != nil {
		return nil, "", err
	}
	upd, err := card.ReadFile(ctx, cardpath.EEPROMUpdate)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Sprintf("%s is on the card but no %s: nothing to flash", cardpath.Recovery, cardpath.EEPROMUpdate), nil
	} else if err != nil {
		return nil, "", err
	}
	sig, err := card.ReadFile(ctx, cardpath.EEPROMSig)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	if !eeprom.SigMatches(sig, upd) {
		return nil, fmt.Sprintf("%s does not hold the sha256 of %s and a ts: line: recovery.bin refuses to flash it", cardpath.EEPROMSig, cardpath.EEPROMUpdate), nil
	}
	state, err := EEPROMFromImage(upd)
	if err != nil {
		return nil, fmt.Sprintf("%s is no bootloader image (%v): recovery.bin refuses to flash it", cardpath.EEPROMUpdate, err), nil
	}
	if err := card.Rename(ctx, cardpath.Recovery, cardpath.RecoveryDone); err != nil {
		return nil, "", err
	}
	return state, "", nil
}

// BootSource is where the emulated Pi booted from.
type BootSource string

const (
	// SourceCard: the card's firmware with its config.txt.
	SourceCard BootSource = "card"
	// SourceTryboot: the card's firmware with its tryboot.txt, the one boot
	// after a reboot with '0 tryboot'.
	SourceTryboot BootSource = "tryboot"
	// SourceUSB: the card does not boot (no start4.elf at its FAT root), so
	// BOOT_ORDER moved on to USB: the SSD's firmware and config.txt.
	SourceUSB BootSource = "usb"
)

// BootPlan is what the firmware (and U-Boot) chose for one power-on.
type BootPlan struct {
	Source BootSource
	// Kernel and Initrd (optional) are host copies of the files to boot;
	// Cmdline is the kernel command line.
	Kernel, Initrd, Cmdline string
	// Via says what chose them, for logs and reports.
	Via string
	// NoBoot, when set, says why nothing boots: the firmware or U-Boot
	// found nothing to boot (Source says whose boot it was; empty when no
	// boot mode of BOOT_ORDER found a device).
	NoBoot string
	// Notes are what the firmware and U-Boot reported on the way without
	// giving up (a missing default label, no device tree in FDTDIR).
	Notes []string
	// CardRetired: the card has no start4.elf at its FAT root, so a Pi 4
	// passes it over.
	CardRetired bool
	// Flashed is the EEPROM state the boot ROM flashed from the card just
	// before this boot (nil: none).
	Flashed *EEPROM
}

// Pi is the emulated Raspberry Pi 4 of one scenario: its card, its SSD, its
// EEPROM and the one-shot tryboot flag, which outlive a boot.
type Pi struct {
	Card, SSD string
	EEPROM    *EEPROM
	// Tryboot is the flag a reboot with '0 tryboot' sets: the next boot's
	// firmware reads tryboot.txt instead of config.txt, once.
	Tryboot bool
	// Dir receives the kernel files taken for each boot.
	Dir   string
	Run   system.Runner
	Tools Tools
}

// PowerOn plays a Pi 4 from power-on to the kernel for boot n: the boot ROM
// flashes a staged EEPROM update, the tryboot flag is read and cleared, and
// the bootloader goes through BOOT_ORDER.
func (p *Pi) PowerOn(ctx context.Context, n int) (*BootPlan, error) {
	card, err := OpenCard(p.Card, p.Run, p.Tools)
	if err != nil {
		return nil, err
	}
	flashed, why, err := flashStaged(ctx, card)
	if err != nil {
		return nil, fmt.Errorf("the boot ROM's recovery.bin: %w", err)
	}
	if flashed != nil {
		p.EEPROM = flashed
	}
	tryboot := p.Tryboot
	p.Tryboot = false
	plan, err := chooseBoot(ctx, bootDevices{card: card, ssd: func() (*Card, error) { return OpenSSDBoot(p.SSD, p.Run, p.Tools) }},
		p.EEPROM.BootOrder(), tryboot, kernelCopies{dir: p.Dir, n: n})
	if err != nil {
		return nil, err
	}
	plan.Flashed = flashed
	if why != "" {
		plan.Notes = append([]string{"boot ROM: " + why}, plan.Notes...)
	}
	return plan, nil
}

// bootDevices are what the bootloader can boot from: the card, and the SSD
// (opened when BOOT_ORDER gets to USB).
type bootDevices struct {
	card *Card
	ssd  func() (*Card, error)
}

// kernelCopies names the host copies of one boot's kernel files.
type kernelCopies struct {
	dir string
	n   int
}

func (k kernelCopies) path(what string) string {
	return filepath.Join(k.dir, fmt.Sprintf("boot-%d-%s", k.n, what))
}

// chooseBoot goes through BOOT_ORDER's modes from the least significant
// nibble: 1 (and 0) the card, 4 (and 5) USB mass storage, e stop, f
// restart (from here the same devices again: nothing new); the other modes
// (network, NVMe, ...) have no device in this machine.
func chooseBoot(ctx context.Context, dev bootDevices, order string, tryboot bool, out kernelCopies) (*BootPlan, error) {
	digits := strings.ToLower(strings.TrimPrefix(strings.ToLower(order), "0x"))
	cardRetired := false
	var passed []string
	var ssd *Card
	ssdOpened := false
modes:
	for i := len(digits) - 1; i >= 0; i-- {
		switch digits[i] {
		case '0', '1':
			ok, err := hasFile(ctx, dev.card, pi4Firmware)
			if err != nil {
				return nil, err
			}
			if !ok {
				cardRetired = true
				passed = append(passed, "SD: no "+pi4Firmware+" at the card's FAT root")
				continue
			}
			source := SourceCard
			if tryboot {
				source = SourceTryboot
			}
			plan, err := firmwareBoot(ctx, source, "the card", dev.card, dev, tryboot, out)
			if plan != nil {
				plan.CardRetired = cardRetired
			}
			return plan, err
		case '4', '5':
			if !ssdOpened {
				ssdOpened = true
				var err error
				if ssd, err = dev.ssd(); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, err
				} else if err != nil {
					passed = append(passed, fmt.Sprintf("USB: %v", err))
					continue
				}
			}
			if ssd == nil {
				continue
			}
			ok, err := hasFile(ctx, ssd, pi4Firmware)
			if err != nil {
				return nil, err
			}
			if !ok {
				passed = append(passed, "USB: no "+pi4Firmware+" on the SSD's partition 1")
				continue
			}
			plan, err := firmwareBoot(ctx, SourceUSB, "the SSD", ssd, bootDevices{card: dev.card, ssd: func() (*Card, error) { return ssd, nil }}, tryboot, out)
			if plan != nil {
				plan.CardRetired = cardRetired
			}
			return plan, err
		case 'e', 'f':
			// Stop, or restart with the same devices: nothing more boots.
			break modes
		}
	}
	why := "none of its modes found a device to boot"
	if len(passed) > 0 {
		why = strings.Join(passed, "; ")
	}
	return &BootPlan{NoBoot: fmt.Sprintf("BOOT_ORDER %s boots nothing: %s", order, why), CardRetired: cardRetired}, nil
}

// hasFile says whether a FAT holds a file (of any size).
func hasFile(ctx context.Context, c *Card, name string) (bool, error) {
	_, err := c.ReadFile(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// readNonEmpty reads a file the firmware or U-Boot loads: missing or empty,
// it loads nothing usable; why says which.
func readNonEmpty(ctx context.Context, c *Card, name string) (data []byte, why string, err error) {
	data, err = c.ReadFile(ctx, name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, "no " + name, nil
	case err != nil:
		return nil, "", err
	case len(data) == 0:
		return nil, name + " is empty", nil
	}
	return data, "", nil
}

// copyNonEmpty copies a file the firmware or U-Boot loads to dest; why says
// what is wrong with it when it is missing or empty.
func copyNonEmpty(ctx context.Context, c *Card, name, dest string) (why string, err error) {
	if err := c.CopyOut(ctx, name, dest); errors.Is(err, fs.ErrNotExist) {
		return "no " + name, nil
	} else if err != nil {
		return "", err
	}
	info, err := os.Stat(dest)
	if err != nil {
		return "", err
	}
	if info.Size() == 0 {
		os.Remove(dest)
		return name + " is empty", nil
	}
	return "", nil
}

// isUBoot says whether the kernel= the firmware loads is U-Boot (nixpkgs'
// ubootRaspberryPi4_64bit, installed as u-boot-rpi4.bin) rather than a
// Linux kernel the firmware starts with cmdline.txt.
func isUBoot(kernel string) bool {
	return strings.HasPrefix(strings.ToLower(path.Base(kernel)), "u-boot")
}

// firmwareBoot plays start4.elf on a device's FAT: config.txt (tryboot.txt
// when the flag was set) names the kernel and armstub, which must be there
// and not empty; a Linux kernel starts with the device's cmdline.txt,
// U-Boot goes on to extlinux.conf.
func firmwareBoot(ctx context.Context, source BootSource, where string, fat *Card, dev bootDevices, tryboot bool, out kernelCopies) (*BootPlan, error) {
	plan := &BootPlan{Source: source}
	configName := cardpath.ConfigTxt
	if tryboot {
		configName = "tryboot.txt"
	}
	noBoot := func(format string, args ...any) (*BootPlan, error) {
		plan.NoBoot = fmt.Sprintf("the firmware on %s: ", where) + fmt.Sprintf(format, args...)
		return plan, nil
	}
	text, why, err := readNonEmpty(ctx, fat, configName)
	if err != nil {
		return nil, err
	}
	if why != "" {
		return noBoot("%s", why)
	}
	readFAT := func(name string) (string, error) {
		if name == configName {
			return string(text), nil
		}
		data, err := fat.ReadFile(ctx, name)
		return string(data), err
	}
	files := ParseConfigTxt(readFAT, configName, tryboot)
	if files.Armstub != "" {
		if _, why, err := readNonEmpty(ctx, fat, files.Armstub); err != nil {
			return nil, err
		} else if why != "" {
			return noBoot("%s names armstub=%s: %s", configName, files.Armstub, why)
		}
	}
	if isUBoot(files.Kernel) {
		if _, why, err := readNonEmpty(ctx, fat, files.Kernel); err != nil {
			return nil, err
		} else if why != "" {
			return noBoot("%s names kernel=%s: %s", configName, files.Kernel, why)
		}
		return ubootBoot(ctx, plan, fmt.Sprintf("%s's %s (kernel=%s)", where, configName, files.Kernel), dev, out)
	}
	plan.Via = fmt.Sprintf("%s's %s: kernel=%s", where, configName, files.Kernel)
	plan.Kernel = out.path("kernel")
	if why, err := copyNonEmpty(ctx, fat, files.Kernel, plan.Kernel); err != nil {
		return nil, err
	} else if why != "" {
		return noBoot("%s names kernel=%s: %s", configName, files.Kernel, why)
	}
	if files.Initrd != "" {
		plan.Initrd = out.path("initrd")
		if why, err := copyNonEmpty(ctx, fat, files.Initrd, plan.Initrd); err != nil {
			return nil, err
		} else if why != "" {
			os.Remove(plan.Kernel)
			return noBoot("%s names initramfs %s: %s", configName, files.Initrd, why)
		}
		plan.Via += ", initramfs " + files.Initrd
	}
	cmdline, why, err := readNonEmpty(ctx, fat, files.Cmdline)
	if err == nil && why == "" {
		plan.Cmdline, err = GuestCmdline(string(cmdline))
	}
	if err == nil && why != "" {
		err = fmt.Errorf("%s on %s: %s", files.Cmdline, where, why)
	}
	if err != nil {
		os.Remove(plan.Kernel)
		if plan.Initrd != "" {
			os.Remove(plan.Initrd)
		}
		return nil, err
	}
	return plan, nil
}
