package bootfiles

import (
	"strconv"
	"strings"
)

// Arm64Key is the config.txt setting that makes the firmware boot the
// 64-bit kernel (kernel8.img).
const Arm64Key = "arm_64bit"

// modelFilters are the conditional filters that select a board model. A
// model filter replaces the previous one; other filters (HDMI:0, EDID=,
// gpioN=, a serial number, tryboot) are combined with it, and [all] resets
// everything.
var modelFilters = map[string]bool{
	"pi0": true, "pi0w": true, "pi02": true, "pi1": true, "pi2": true, "pi3": true, "pi3+": true,
	"pi4": true, "pi400": true, "pi5": true, "pi500": true, "cm1": true, "cm3": true, "cm3+": true,
	"cm4": true, "cm4s": true, "cm5": true, "board-type": true,
}

// filters is the state of conditional filters at a point in config.txt.
type filters struct {
	model       string          // "" when no model filter is active
	conditional map[string]bool // active non-model filters, by kind
	none        bool            // [none]: nothing applies until [all]
}

func (f *filters) apply(filter string) {
	filter = strings.ToLower(strings.TrimSpace(filter))
	switch kind := filterKind(filter); {
	case filter == "all":
		*f = filters{}
	case filter == "none":
		f.none = true
	case modelFilters[kind]:
		f.model = filter
	default:
		if f.conditional == nil {
			f.conditional = map[string]bool{}
		}
		f.conditional[kind] = true
	}
}

// filterKind is the part of a filter that says what it tests: "hdmi" for
// HDMI:1, "edid" for EDID=..., "board-type" for board-type=0x11.
func filterKind(filter string) string {
	if i := strings.IndexAny(filter, "=:"); i >= 0 {
		return filter[:i]
	}
	if strings.HasPrefix(filter, "0x") {
		return "serial"
	}
	return filter
}

// unconditional: the point is in [all] (or before any filter).
func (f filters) unconditional() bool {
	return f.model == "" && len(f.conditional) == 0 && !f.none
}

// forPi4: a setting here applies to a Raspberry Pi 4 whatever its HDMI,
// EDID, GPIO or serial number.
func (f filters) forPi4() bool {
	return !f.none && len(f.conditional) == 0 && (f.model == "" || f.model == "pi4")
}

// setting is one key=value line; value is at [valueStart, valueEnd) in line.
type setting struct {
	lineNo               int // 1-based
	line                 int // index into the file's lines
	key, value           string
	valueStart, valueEnd int
	forPi4               bool
}

// parseConfigTxt splits text into lines (each with its line ending) and
// finds every setting with the filters in force where it is, plus the
// filters in force at the end of the file.
func parseConfigTxt(text string) (lines []string, settings []setting, end filters) {
	lines = strings.SplitAfter(text, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var f filters
	for i, raw := range lines {
		content := strings.TrimRight(raw, "\r\n")
		trimmed := strings.TrimSpace(content)
		switch {
		case trimmed == "" || trimmed[0] == '#':
		case trimmed[0] == '[':
			if end := strings.IndexByte(trimmed, ']'); end > 0 {
				f.apply(trimmed[1:end])
			}
		default:
			key, value, ok := strings.Cut(content, "=")
			if !ok {
				continue
			}
			valueStart := len(key) + 1
			valueStart += len(value) - len(strings.TrimLeft(value, " \t"))
			value = strings.Trim(value, " \t")
			settings = append(settings, setting{
				lineNo: i + 1, line: i,
				key: strings.TrimSpace(key), value: value,
				valueStart: valueStart, valueEnd: valueStart + len(value),
				forPi4: f.forPi4(),
			})
		}
	}
	return lines, settings, f
}

// Arm64Effective reports whether config.txt switches a Raspberry Pi 4 to
// the 64-bit kernel: the last arm_64bit setting that applies to a Pi 4 (in
// [all], [pi4] or before any filter) is non-zero. line is the 1-based line of
// that setting, 0 when no setting applies.
func Arm64Effective(configTxt string) (on bool, line int) {
	_, settings, _ := parseConfigTxt(configTxt)
	for _, s := range settings {
		if s.key == Arm64Key && s.forPi4 {
			on, line = nonZero(s.value), s.lineNo
		}
	}
	return on, line
}

// Pi4Value gives the value of the last key= setting that applies to a
// Raspberry Pi 4 whatever its HDMI, EDID or serial (in [all], [pi4] or
// before any filter), and whether there is one: what the firmware loads for
// kernel= or armstub=.
func Pi4Value(configTxt, key string) (string, bool) {
	_, settings, _ := parseConfigTxt(configTxt)
	value, found := "", false
	for _, s := range settings {
		if s.key == key && s.forPi4 {
			value, found = s.value, true
		}
	}
	return value, found
}

func nonZero(v string) bool {
	n, err := strconv.ParseInt(v, 0, 64)
	return err == nil && n != 0
}

// SetArm64 makes arm_64bit=1 effective for a Pi 4 and says whether it
// changed the text. Already effective: unchanged. An arm_64bit line that
// applies to a Pi 4 gets its value replaced in place (never a second line);
// otherwise `arm_64bit=1` is appended in an [all] section (adding the [all]
// header when the file ends inside a filter). Every other byte is kept.
func SetArm64(configTxt string) (string, bool) {
	if on, _ := Arm64Effective(configTxt); on {
		return configTxt, false
	}
	lines, settings, end := parseConfigTxt(configTxt)
	rewrote := false
	for _, s := range settings {
		if s.key == Arm64Key && s.forPi4 {
			raw := lines[s.line]
			lines[s.line] = raw[:s.valueStart] + "1" + raw[s.valueEnd:]
			rewrote = true
		}
	}
	if rewrote {
		return strings.Join(lines, ""), true
	}
	eol := "\n"
	if strings.Contains(configTxt, "\r\n") {
		eol = "\r\n"
	}
	out := configTxt
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += eol
	}
	if !end.unconditional() {
		out += "[all]" + eol
	}
	return out + Arm64Key + "=1" + eol, true
}

// mayApplyToPi4: a setting here may take effect on some Pi 4 family board
// (a Pi 4, 400 or CM4, with whatever HDMI, GPIO or serial number).
func (f filters) mayApplyToPi4() bool {
	if f.none {
		return false
	}
	switch f.model {
	case "", "pi4", "pi400", "cm4", "cm4s":
		return true
	}
	return strings.HasPrefix(f.model, "board-type")
}

// maxIncludeDepth bounds include chains (a file including itself).
const maxIncludeDepth = 8

// EEPROMWriteProtected finds an eeprom_write_protect=1 that may take
// effect on a Pi 4: in config.txt or a file it includes (include NAME,
// read through readFile), in any section but [none] and other boards'
// ([pi5] does not apply to a Pi 4). The bootloader then sets the EEPROM's
// write-protect bits, and with the /WP pin low (which Linux cannot see)
// recovery.bin cannot flash. where is "FILE line N".
func EEPROMWriteProtected(readFile func(name string) (string, error), name string) (on bool, where string) {
	return writeProtected(readFile, name, 0)
}

func writeProtected(readFile func(string) (string, error), name string, depth int) (bool, string) {
	if depth > maxIncludeDepth {
		return false, ""
	}
	text, err := readFile(name)
	if err != nil {
		return false, ""
	}
	var f filters
	on, where := false, ""
	for i, raw := range strings.SplitAfter(text, "\n") {
		trimmed := strings.TrimSpace(strings.TrimRight(raw, "\r\n"))
		switch {
		case trimmed == "" || trimmed[0] == '#':
		case trimmed[0] == '[':
			if end := strings.IndexByte(trimmed, ']'); end > 0 {
				f.apply(trimmed[1:end])
			}
		case strings.HasPrefix(trimmed, "include ") || strings.HasPrefix(trimmed, "include\t"):
			if !f.mayApplyToPi4() {
				continue
			}
			inc := strings.TrimSpace(trimmed[len("include"):])
			if ok, w := writeProtected(readFile, inc, depth+1); ok {
				on, where = true, w
			}
		default:
			key, value, ok := strings.Cut(trimmed, "=")
			if ok && strings.TrimSpace(key) == "eeprom_write_protect" && f.mayApplyToPi4() {
				// The last assignment wins, but one that may apply is enough
				// to make the update unsafe to count on.
				if nonZero(strings.TrimSpace(value)) {
					on, where = true, name+" line "+strconv.Itoa(i+1)
				}
			}
		}
	}
	return on, where
}
