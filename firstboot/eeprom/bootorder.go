package eeprom

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// The boot order's meaning, in one place: config validation, the eeprom
// step's probe, the stage, the retire step and the QEMU harness all ask
// here. BOOT_ORDER is read one nibble at a time from the least significant;
// the bootloader tries each mode in turn, and a stop (e) or restart (f)
// ends the list: modes after it are never reached.

// DefaultBootOrder is what a Pi 4 bootloader of 2020-09-03 or later does
// when its config has no BOOT_ORDER: SD card, then USB, then restart.
const DefaultBootOrder = "0xf41"

// modes returns the order's nibbles from the least significant, the order
// the bootloader tries them in.
func modes(order string) (string, error) {
	if err := ValidateBootOrder(order); err != nil {
		return "", err
	}
	digits := strings.ToLower(order[2:])
	out := make([]byte, 0, len(digits))
	for i := len(digits) - 1; i >= 0; i-- {
		out = append(out, digits[i])
	}
	return string(out), nil
}

// ReachesUSB checks that the bootloader gets to USB mass storage (mode 4,
// or 5 on the BCM2711's own controller) before any stop or restart: nil
// when it does, otherwise an error that says why not.
func ReachesUSB(order string) error {
	m, err := modes(order)
	if err != nil {
		return err
	}
	if !strings.ContainsAny(m, "45") {
		return fmt.Errorf("BOOT_ORDER %s has no USB mode (4), so the Pi would never boot the SSD; use 0xf41", order)
	}
	for i, c := range m {
		switch c {
		case '4', '5':
			return nil
		case 'e', 'f':
			what := "stop"
			if c == 'f' {
				what = "restart"
			}
			return fmt.Errorf("BOOT_ORDER %s never reaches USB: read from the right, mode %d is %c (%s) and the bootloader tries nothing after it; put 4 (USB) before it, e.g. 0xf41", order, i+1, c, what)
		}
	}
	return nil
}

// SDBeforeUSB says whether an order tries the SD card (modes 0 and 1)
// before USB mass storage: then the card boots for as long as it is
// bootable, and the hand-over must retire it for the SSD to get its turn.
func SDBeforeUSB(order string) bool {
	m, err := modes(order)
	if err != nil {
		return false
	}
	for _, c := range m {
		switch c {
		case '0', '1':
			return true
		case '4', '5', 'e', 'f':
			return false
		}
	}
	return false
}

// BootOrders lists every BOOT_ORDER assignment that may be in force on a
// Pi 4, in file order: the bootloader applies the last one whose section
// filter matches, and which filters match ([gpio4=1], [tryboot], [cm4],
// a serial number) cannot be known beforehand, so every assignment outside
// a section that never applies to a Pi 4 ([none], [pi5], [cm5]) counts. A
// config without one means DefaultBootOrder.
func BootOrders(config []byte) []string {
	var orders []string
	skip := false
	for _, l := range splitLines(config) {
		t := strings.TrimSpace(string(trimEOL(l)))
		if strings.HasPrefix(t, "[") {
			switch strings.ToLower(t) {
			case "[none]", "[pi5]", "[cm5]", "[pi500]":
				skip = true
			default:
				skip = false
			}
			continue
		}
		if v, ok := strings.CutPrefix(t, "BOOT_ORDER="); ok && !skip {
			orders = append(orders, strings.TrimSpace(v))
		}
	}
	if len(orders) == 0 {
		return []string{DefaultBootOrder}
	}
	return orders
}

// ConfigReachesUSB reads a bootloader config conservatively: nil only when
// every BOOT_ORDER assignment that may be in force reaches USB.
func ConfigReachesUSB(config []byte) error {
	for _, o := range BootOrders(config) {
		if err := ReachesUSB(o); err != nil {
			return err
		}
	}
	return nil
}

// HasBootOrder says whether config assigns BOOT_ORDER and every assignment
// that may be in force equals want (as numbers: 0xF41 is 0xf41). A config
// without one is not taken to have it: the update then writes it, explicitly.
func HasBootOrder(config []byte, want string) bool {
	w, err := strconv.ParseUint(want, 0, 32)
	if err != nil || !bytes.Contains(config, []byte("BOOT_ORDER=")) {
		return false
	}
	for _, o := range BootOrders(config) {
		v, err := strconv.ParseUint(o, 0, 32)
		if err != nil || v != w {
			return false
		}
	}
	return true
}

// SetBootOrder writes exactly one BOOT_ORDER: the first assignment is
// replaced in place (or one added as SetKeys adds a key) and every other
// BOOT_ORDER line is removed, so no later line can override it. Every other
// byte stays as it was.
func SetBootOrder(config []byte, order string) ([]byte, error) {
	s := Setting{Key: "BOOT_ORDER", Value: order}
	out, err := SetKeys(config, s)
	if err != nil {
		return nil, err
	}
	lines := splitLines(out)
	kept := lines[:0]
	seen := false
	for _, l := range lines {
		if bytes.HasPrefix(bytes.TrimSpace(l), []byte("BOOT_ORDER=")) {
			if seen {
				continue
			}
			seen = true
		}
		kept = append(kept, l)
	}
	return bytes.Join(kept, nil), nil
}
