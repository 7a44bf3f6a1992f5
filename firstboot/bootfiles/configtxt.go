package bootfiles

import (
	"io/fs"
	"maps"
	"strconv"
	"strings"

	"github.com/nixpi/nixpi/firstboot/cardpath"
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
// EDID, GPIO or serial number; with tryboot, the [tryboot] filter holds.
func (f filters) forPi4(tryboot bool) bool {
	conditions := len(f.conditional)
	if tryboot && f.conditional["tryboot"] {
		conditions--
	}
	return !f.none && conditions == 0 && (f.model == "" || f.model == "pi4")
}

// clone is f, not sharing its map with f.
func (f filters) clone() filters {
	f.conditional = maps.Clone(f.conditional)
	return f
}

// ReadFile reads a file of the boot partition by the name config.txt
// gives it (config.txt itself, or NAME in `include NAME`).
type ReadFile func(name string) (string, error)

// Files is a boot partition held in memory, by name: for a config.txt
// whose includes are not at hand (a name it lacks is missing, which the
// firmware skips too).
type Files map[string]string

// Read is Files as a ReadFile.
func (f Files) Read(name string) (string, error) {
	text, ok := f[name]
	if !ok {
		return "", fs.ErrNotExist
	}
	return text, nil
}

// Setting is one line of config.txt, or of a file it includes, that sets
// something: key=value, or `initramfs FILE [followkernel]` (Key
// "initramfs", Value what follows the name). Key and Value are trimmed of
// the spaces around them.
type Setting struct {
	File       string // the file the line is in, as config.txt names it
	Line       int    // 1-based
	Key, Value string

	index                int // into the file's lines
	valueStart, valueEnd int // Value's bytes in the line
	filters              filters
}

// Pi4 is the Raspberry Pi 4 whose reading of config.txt Pi4.Settings gives.
type Pi4 struct {
	// Tryboot: the firmware reads the file because of the tryboot flag
	// (a reboot with '0 tryboot'), so [tryboot] holds.
	Tryboot bool
	// Maybe counts too what may take effect on some Pi 4 family board (a
	// 400, a CM4) or under a condition nixpi cannot see (HDMI, EDID, GPIO,
	// a serial number); without it, only what every Pi 4B applies counts.
	Maybe bool
}

// maxIncludeDepth bounds include chains (a file including itself).
const maxIncludeDepth = 8

// Settings are the settings of the config file name (read through read)
// that the Pi applies, in the order the firmware reads them: an include
// puts the included file's lines in its place, under the filters in force
// there, and a missing file is skipped. The last setting of a key wins.
func (p Pi4) Settings(read ReadFile, name string) []Setting {
	var out []Setting
	var f filters
	walkConfig(read, name, 0, &f, func(s Setting) {
		if p.applies(s.filters) {
			out = append(out, s)
		}
	})
	return out
}

// Value is the value of the last key= setting the Pi applies, and whether
// there is one.
func (p Pi4) Value(read ReadFile, name, key string) (string, bool) {
	value, found := "", false
	for _, s := range p.Settings(read, name) {
		if s.Key == key {
			value, found = s.Value, true
		}
	}
	return value, found
}

func (p Pi4) applies(f filters) bool {
	if p.Maybe {
		return f.mayApplyToPi4()
	}
	return f.forPi4(p.Tryboot)
}

// walkConfig calls visit for every setting of file name in order, with
// the filters in force where it is (f, which the file's sections change),
// and goes into every include whose filters may apply to a Pi 4.
func walkConfig(read ReadFile, name string, depth int, f *filters, visit func(Setting)) {
	if depth > maxIncludeDepth {
		return
	}
	text, err := read(name)
	if err != nil {
		return
	}
	for i, raw := range splitLines(text) {
		content := strings.TrimRight(raw, "\r\n")
		trimmed := strings.TrimSpace(content)
		switch {
		case trimmed == "" || trimmed[0] == '#':
		case trimmed[0] == '[':
			if end := strings.IndexByte(trimmed, ']'); end > 0 {
				f.apply(trimmed[1:end])
			}
		case hasDirective(trimmed, "include"):
			if f.mayApplyToPi4() {
				walkConfig(read, strings.TrimSpace(trimmed[len("include"):]), depth+1, f, visit)
			}
		default:
			key, value, ok := strings.Cut(content, "=")
			valueStart := len(key) + 1
			if !ok {
				if !hasDirective(trimmed, "initramfs") {
					continue
				}
				// The one setting without '=' (the firmware's own quirk).
				lead := len(content) - len(strings.TrimLeft(content, " \t"))
				key, value = "initramfs", content[lead+len("initramfs"):]
				valueStart = lead + len("initramfs")
			}
			valueStart += len(value) - len(strings.TrimLeft(value, " \t"))
			value = strings.Trim(value, " \t")
			visit(Setting{
				File: name, Line: i + 1, Key: strings.TrimSpace(key), Value: value,
				index: i, valueStart: valueStart, valueEnd: valueStart + len(value),
				filters: f.clone(),
			})
		}
	}
}

// hasDirective: line is `word ARGUMENT`.
func hasDirective(line, word string) bool {
	rest, ok := strings.CutPrefix(line, word)
	return ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "\t"))
}

// splitLines splits text into lines, each with its line ending.
func splitLines(text string) []string {
	lines := strings.SplitAfter(text, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// Arm64Effective reports whether config.txt switches a Raspberry Pi 4 to
// the 64-bit kernel: the last arm_64bit setting that applies to a Pi 4 (in
// [all], [pi4] or before any filter) is non-zero. line is the 1-based line of
// that setting, 0 when no setting applies.
func Arm64Effective(configTxt string) (on bool, line int) {
	for _, s := range (Pi4{}).Settings(Files{cardpath.ConfigTxt: configTxt}.Read, cardpath.ConfigTxt) {
		if s.Key == Arm64Key {
			on, line = nonZero(s.Value), s.Line
		}
	}
	return on, line
}

// Pi4Value gives the value of the last key= setting that applies to a
// Raspberry Pi 4 whatever its HDMI, EDID or serial (in [all], [pi4] or
// before any filter), and whether there is one: what the firmware loads for
// kernel= or armstub=.
func Pi4Value(configTxt, key string) (string, bool) {
	return Pi4{}.Value(Files{cardpath.ConfigTxt: configTxt}.Read, cardpath.ConfigTxt, key)
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
	read := Files{cardpath.ConfigTxt: configTxt}.Read
	lines := splitLines(configTxt)
	rewrote := false
	for _, s := range (Pi4{}).Settings(read, cardpath.ConfigTxt) {
		if s.Key == Arm64Key && s.File == cardpath.ConfigTxt {
			raw := lines[s.index]
			lines[s.index] = raw[:s.valueStart] + "1" + raw[s.valueEnd:]
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
	if !endFilters(read, cardpath.ConfigTxt).unconditional() {
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

// EEPROMWriteProtected finds an eeprom_write_protect=1 that may take
// effect on a Pi 4: in config.txt or a file it includes (include NAME,
// read through readFile), in any section but [none] and other boards'
// ([pi5] does not apply to a Pi 4). The bootloader then sets the EEPROM's
// write-protect bits, and with the /WP pin low (which Linux cannot see)
// recovery.bin cannot flash. where is "FILE line N".
func EEPROMWriteProtected(readFile ReadFile, name string) (on bool, where string) {
	for _, s := range (Pi4{Maybe: true}).Settings(readFile, name) {
		// The last assignment wins, but one that may apply is enough to
		// make the update unsafe to count on.
		if s.Key == "eeprom_write_protect" && nonZero(s.Value) {
			on, where = true, s.File+" line "+strconv.Itoa(s.Line)
		}
	}
	return on, where
}

// endFilters are the filters in force at the end of file name.
func endFilters(read ReadFile, name string) filters {
	var f filters
	walkConfig(read, name, 0, &f, func(Setting) {})
	return f
}
