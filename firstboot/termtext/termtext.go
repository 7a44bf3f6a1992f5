// Package termtext is the one way nixpi shows untrusted text (a card's
// journal, a disk's model, a config, an image's bootconf.txt) on a
// terminal: every character that could move the cursor, rewrite what was
// printed, retitle the window or reorder a line is written as an escape
// instead. The CLI sends all it prints through a Writer; Line keeps one
// value on one line, so a message cannot fake the lines after it.
package termtext

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

// Escape writes every control character but newline and tab, every
// invalid UTF-8 byte and the Unicode bidi controls as escapes: \r, \x1b,
// \xff for C0 and invalid bytes, \u009b, \u202e from DEL on. The \u form
// is JSON's too, so JSON from encoding/json (which never holds a raw C0
// character or invalid UTF-8) stays valid and means the same once escaped.
func Escape(s string) string { return escape(s, false) }

// Line is Escape that also writes newlines as \n: one value on one line.
func Line(s string) string { return escape(s, true) }

// Unsafe says whether Escape rewrites r: C0 controls but tab and newline,
// DEL, C1 controls and the bidi controls. The config refuses these in its
// strings (firstboot/config), so it never holds what this package rewrites.
func Unsafe(r rune) bool {
	switch {
	case r == '\n' || r == '\t':
		return false
	case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0): // C0, DEL, C1
		return true
	case r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069): // bidi
		return true
	}
	return false
}

func escape(s string, oneLine bool) string {
	if clean(s, oneLine) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' && oneLine:
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case !Unsafe(r):
			b.WriteString(s[i : i+size])
		case r < 0x20:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

func clean(s string, oneLine bool) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || Unsafe(r) || (oneLine && r == '\n') {
			return false
		}
		i += size
	}
	return true
}

// Writer escapes everything written to it with Escape. A character whose
// UTF-8 bytes are split between two writes (a bufio.Writer's chunks) is
// held back until the next write completes it, so it is not taken for two
// invalid bytes; Flush writes what is held at the end. Safe for concurrent
// use: a build logs from more than one goroutine.
type Writer struct {
	mu      sync.Mutex
	w       io.Writer
	pending []byte
}

// NewWriter returns a Writer that escapes what it writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	data := append(w.pending, p...)
	cut := len(data) - incompleteTail(data)
	w.pending = append([]byte(nil), data[cut:]...)
	if _, err := io.WriteString(w.w, Escape(string(data[:cut]))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes, escaped, the start of a character that no write completed.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pending) == 0 {
		return nil
	}
	_, err := io.WriteString(w.w, Escape(string(w.pending)))
	w.pending = nil
	return err
}

// incompleteTail is the length of the start of a UTF-8 sequence that ends
// data and more bytes could complete; 0 when data ends whole (or invalid).
func incompleteTail(data []byte) int {
	for n := 1; n <= utf8.UTFMax-1 && n <= len(data); n++ {
		c := data[len(data)-n]
		if c < 0x80 {
			return 0
		}
		if c >= 0xc0 { // a lead byte
			if utf8.FullRune(data[len(data)-n:]) {
				return 0
			}
			return n
		}
	}
	return 0
}
