// Package bootfiles edits the Raspberry Pi's boot configuration files as
// text: cmdline.txt (the kernel command line, one line) and config.txt (the
// firmware settings). Edits change only what they must; every other byte of
// the file stays as it was, so a person's own settings survive and an edit
// can be undone exactly.
package bootfiles

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/nixpi/nixpi/firstboot/cardpath"
)

// HookWords are the kernel command line words that make systemd run the
// nixpi first-boot hook once from the FAT partition mounted at fatMount
// (/boot/firmware on Bookworm and later, /boot before), then reboot. This is
// the mechanism rpi-imager uses; it runs after local mounts, before the
// network and multi-user.target.
func HookWords(fatMount string) []string {
	return []string{
		"systemd.run=" + path.Join(fatMount, cardpath.Binary),
		"systemd.run_success_action=reboot",
		"systemd.unit=kernel-command-line.target",
	}
}

// hookKeys are the parameters the hook sets; any other value for them means
// another first-boot hook is already there.
var hookKeys = []string{"systemd.run", "systemd.run_success_action", "systemd.unit"}

// word is one whitespace-separated word of the command line and its byte
// offsets in the file.
type word struct {
	text       string
	start, end int
}

// words splits the first line of cmdline into words. Double quotes group
// spaces into a word, as the kernel's parser does.
func words(cmdline string) []word {
	line := firstLine(cmdline)
	var ws []word
	for i := 0; i < len(line); {
		if isSpace(line[i]) {
			i++
			continue
		}
		start := i
		quoted := false
		for i < len(line) && (quoted || !isSpace(line[i])) {
			if line[i] == '"' {
				quoted = !quoted
			}
			i++
		}
		ws = append(ws, word{text: line[start:i], start: start, end: i})
	}
	return ws
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// firstLine is cmdline up to its first line ending. The firmware passes only
// the first line to the kernel.
func firstLine(cmdline string) string {
	if i := strings.IndexAny(cmdline, "\r\n"); i >= 0 {
		return cmdline[:i]
	}
	return cmdline
}

// checkOneLine refuses a file whose later lines carry words: the firmware
// would ignore them, so the file is not what its author thinks.
func checkOneLine(cmdline string) error {
	rest := cmdline[len(firstLine(cmdline)):]
	if strings.TrimSpace(rest) != "" {
		return errors.New("cmdline.txt has more than one line, and the firmware reads only the first; join the kernel parameters into one line")
	}
	if strings.Count(firstLine(cmdline), `"`)%2 != 0 {
		return errors.New("cmdline.txt has an unmatched double quote, so words added after it would become part of a quoted value; fix the quoting")
	}
	if strings.TrimSpace(cmdline) == "" {
		return errors.New("cmdline.txt is empty; it must hold the kernel parameters (root=... and the rest), so use the file from the image")
	}
	return nil
}

// HasHook reports whether every hook word is on the command line.
func HasHook(cmdline string, hook []string) bool {
	have := map[string]bool{}
	for _, w := range words(cmdline) {
		have[w.text] = true
	}
	for _, h := range hook {
		if !have[h] {
			return false
		}
	}
	return len(hook) > 0
}

// AddHook appends the hook words to the end of the command line, after the
// existing words and before any trailing spaces and the line ending, and
// leaves everything else as it was. With the hook already there it returns
// cmdline unchanged. It refuses a command line that already carries a
// different first-boot hook (another systemd.run=, say), since the two would
// fight over the boot.
func AddHook(cmdline string, hook []string) (string, error) {
	if err := checkOneLine(cmdline); err != nil {
		return "", err
	}
	if HasHook(cmdline, hook) {
		return cmdline, nil
	}
	for _, w := range words(cmdline) {
		key, _, _ := strings.Cut(w.text, "=")
		for _, h := range hook {
			hkey, _, _ := strings.Cut(h, "=")
			if key == hkey && contains(hookKeys, key) {
				return "", fmt.Errorf("cmdline.txt already has %q, another first-boot hook (rpi-imager customisation?); start from an unmodified image or remove it", w.text)
			}
		}
	}
	line := firstLine(cmdline)
	content := strings.TrimRight(line, " \t")
	return content + " " + strings.Join(hook, " ") + cmdline[len(content):], nil
}

// RemoveHook removes exactly the hook words, each with the one space before
// it, so RemoveHook(AddHook(x)) == x. Everything else stays byte for byte; a
// command line without the hook comes back unchanged.
func RemoveHook(cmdline string, hook []string) string {
	ws := words(cmdline)
	var b strings.Builder
	last := 0
	for i, w := range ws {
		if !contains(hook, w.text) {
			continue
		}
		start, end := w.start, w.end
		switch {
		case start > 0 && isSpace(cmdline[start-1]) && start-1 >= last:
			start-- // the separator before it
		case i+1 < len(ws) && end < len(cmdline) && isSpace(cmdline[end]):
			end++ // first word: the separator after it
		}
		b.WriteString(cmdline[last:start])
		last = end
	}
	b.WriteString(cmdline[last:])
	return b.String()
}

// Param gives the value of the last key=value word for key (the kernel
// honours the last), and whether there was one.
func Param(cmdline, key string) (string, bool) {
	value, found := "", false
	for _, w := range words(cmdline) {
		if k, v, ok := strings.Cut(w.text, "="); ok && k == key {
			value, found = strings.Trim(v, `"`), true
		}
	}
	return value, found
}

// Root gives the root= parameter ("PARTUUID=0a1b2c3d-02"), or "" if none.
func Root(cmdline string) string {
	root, _ := Param(cmdline, "root")
	return root
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
