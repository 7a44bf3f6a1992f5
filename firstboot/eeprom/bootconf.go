package eeprom

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/nixpi/nixpi/firstboot/termtext"
)

// Setting is one KEY=VALUE line of bootconf.txt.
type Setting struct {
	Key, Value string
}

func (s Setting) String() string { return s.Key + "=" + s.Value }

// ParseSetting reads "KEY=VALUE" (as given to --set) and validates it.
func ParseSetting(kv string) (Setting, error) {
	key, value, ok := strings.Cut(kv, "=")
	if !ok {
		return Setting{}, fmt.Errorf("setting %q has no '=': write it as KEY=VALUE, e.g. BOOT_ORDER=0xf41", kv)
	}
	s := Setting{Key: key, Value: value}
	return s, s.Validate()
}

// Validate checks the key is a plain config name and the value fits on one
// line; BOOT_ORDER values must be a valid Pi 4 boot order.
func (s Setting) Validate() error {
	if s.Key == "" {
		return fmt.Errorf("setting %q has an empty key: write it as KEY=VALUE", s.String())
	}
	for _, c := range s.Key {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("setting key %q may contain only letters, digits and '_' (bootloader keys look like BOOT_ORDER)", s.Key)
		}
	}
	for _, r := range s.Value {
		if r == '\t' || r == '\n' || termtext.Unsafe(r) {
			return fmt.Errorf("setting %s: the value holds %s (%U): it must be one line of printable text", s.Key, controlName(r), r)
		}
	}
	if s.Key == "BOOT_ORDER" {
		return ValidateBootOrder(s.Value)
	}
	return nil
}

func controlName(r rune) string {
	switch r {
	case 0:
		return "a NUL"
	case '\n', '\r':
		return "a line break"
	case '\t':
		return "a tab"
	}
	return "a control character"
}

// pi4BootModes are the BOOT_ORDER nibbles Raspberry Pi documents for the
// Pi 4 family: 0 SD (card detect), 1 SD, 2 network, 3 RPIBOOT, 4 USB mass
// storage, 5 BCM USB mass storage, 6 NVMe (CM4), 7 HTTP, e stop, f restart.
const pi4BootModes = "01234567ef"

// ValidateBootOrder checks a BOOT_ORDER value: "0x" and 1 to 8 hex digits,
// each a documented Pi 4 boot mode.
func ValidateBootOrder(v string) error {
	const hint = "use hex digits read right to left: 1 SD, 4 USB, 2 network, 6 NVMe, e stop, f restart (e.g. 0xf41)"
	digits, ok := strings.CutPrefix(strings.ToLower(v), "0x")
	if !ok {
		return fmt.Errorf("BOOT_ORDER %q must start with 0x: %s", v, hint)
	}
	if len(digits) == 0 || len(digits) > 8 {
		return fmt.Errorf("BOOT_ORDER %q must have 1 to 8 hex digits: %s", v, hint)
	}
	for _, c := range digits {
		if !strings.ContainsRune(pi4BootModes, c) {
			return fmt.Errorf("BOOT_ORDER %q: %q is not a Pi 4 boot mode: %s", v, c, hint)
		}
	}
	return nil
}

// Lookup returns the value of the first KEY= line in a bootconf.txt.
func Lookup(config []byte, key string) (string, bool) {
	for _, l := range splitLines(config) {
		if v, ok := bytes.CutPrefix(trimEOL(l), []byte(key+"=")); ok {
			return string(v), true
		}
	}
	return "", false
}

// Has reports whether config already says what s says: its first KEY= line
// has the value; for BOOT_ORDER, every assignment that may be in force
// (HasBootOrder), as the bootloader applies the last that matches.
func Has(config []byte, s Setting) bool {
	if s.Key == "BOOT_ORDER" {
		return HasBootOrder(config, s.Value)
	}
	v, ok := Lookup(config, s.Key)
	return ok && v == s.Value
}

// SetKeys applies settings to a bootconf.txt in order: the first KEY= line is
// replaced in place; a key that is absent is added at the end of the first
// [all] section, or in a new [all] section at the end when there is none.
// Every other byte stays as it was.
func SetKeys(config []byte, settings ...Setting) ([]byte, error) {
	eol := []byte("\n")
	if bytes.Contains(config, []byte("\r\n")) {
		eol = []byte("\r\n")
	}
	lines := splitLines(config)
	for _, s := range settings {
		if err := s.Validate(); err != nil {
			return nil, err
		}
		lines = setKey(lines, s, eol)
	}
	return bytes.Join(lines, nil), nil
}

func setKey(lines [][]byte, s Setting, eol []byte) [][]byte {
	newLine := append([]byte(s.String()), eol...)
	for i, l := range lines {
		if bytes.HasPrefix(l, []byte(s.Key+"=")) {
			lines[i] = append([]byte(s.String()), l[len(trimEOL(l)):]...)
			return lines
		}
	}
	all := -1
	for i, l := range lines {
		if string(bytes.TrimSpace(l)) == "[all]" {
			all = i
			break
		}
	}
	if all < 0 {
		if n := len(lines); n > 0 && !bytes.HasSuffix(lines[n-1], []byte("\n")) {
			lines[n-1] = append(lines[n-1], eol...)
		}
		return append(lines, append([]byte("[all]"), eol...), newLine)
	}
	// After the section's last non-blank line, so blank lines that separate
	// it from the next section stay where they are.
	at := all
	for i := all + 1; i < len(lines); i++ {
		t := bytes.TrimSpace(lines[i])
		if bytes.HasPrefix(t, []byte("[")) {
			break
		}
		if len(t) > 0 {
			at = i
		}
	}
	if !bytes.HasSuffix(lines[at], []byte("\n")) {
		lines[at] = append(lines[at], eol...)
	}
	out := make([][]byte, 0, len(lines)+1)
	out = append(out, lines[:at+1]...)
	out = append(out, newLine)
	return append(out, lines[at+1:]...)
}

// splitLines splits after each '\n', keeping line endings, so joining the
// lines gives the input back.
func splitLines(b []byte) [][]byte {
	var lines [][]byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			lines = append(lines, bytes.Clone(b))
			break
		}
		lines = append(lines, bytes.Clone(b[:i+1]))
		b = b[i+1:]
	}
	return lines
}

func trimEOL(l []byte) []byte {
	l = bytes.TrimSuffix(l, []byte("\n"))
	return bytes.TrimSuffix(l, []byte("\r"))
}
