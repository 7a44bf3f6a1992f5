package termtext

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

func TestEscape(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain text, ünïcode, 🙂\n\tnext line": "plain text, ünïcode, 🙂\n\tnext line",
		"\x1b[2J\x1b]0;owned\x07":             `\x1b[2J\x1b]0;owned\x07`,
		"over\rwrite":                         `over\rwrite`,
		"del\x7f c1\u009b31m":                 `del\u007f c1\u009b31m`,
		"bad \xff\xfe utf-8":                  `bad \xff\xfe utf-8`,
		"bidi \u202eevil\u2066 \u200f":        `bidi \u202eevil\u2066 \u200f`,
		"nul\x00":                             `nul\x00`,
		"cut \xe2\x82":                        `cut \xe2\x82`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLineKeepsOneLine(t *testing.T) {
	t.Parallel()
	got := Line("disk busy\nINSTALL COMPLETE: NixOS runs from the SSD\r\n\ttab")
	if want := `disk busy\nINSTALL COMPLETE: NixOS runs from the SSD\r\n` + "\ttab"; got != want {
		t.Errorf("Line = %q, want %q", got, want)
	}
	if Line("plain") != "plain" {
		t.Error("Line changes plain text")
	}
}

// Escaped JSON from encoding/json is JSON with the same meaning: inspect
// --json goes through the same Writer as everything else.
func TestEscapeKeepsJSON(t *testing.T) {
	t.Parallel()
	in := map[string]string{"msg": "\x1b[2J \u009b31m \u202eevil \x7f \xff \n"}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	esc := Escape(string(raw))
	for _, r := range []string{"\u009b", "\u202e", "\x7f"} {
		if strings.Contains(esc, r) {
			t.Errorf("escaped JSON holds a raw %q: %s", r, esc)
		}
	}
	var back map[string]string
	if err := json.Unmarshal([]byte(esc), &back); err != nil {
		t.Fatalf("escaped JSON does not parse: %v: %s", err, esc)
	}
	var want map[string]string
	json.Unmarshal(raw, &want)
	if back["msg"] != want["msg"] {
		t.Errorf("escaped JSON means %q, want %q", back["msg"], want["msg"])
	}
}

// A character split between two writes is not taken for invalid bytes;
// one no write completes is shown escaped at Flush.
func TestWriterSplitCharacter(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	w := NewWriter(&out)
	euro := []byte("€") // e2 82 ac
	for _, p := range [][]byte{[]byte("a"), euro[:1], euro[1:2], append(euro[2:], "\x1b"...), []byte("b\xe2\x82")} {
		if n, err := w.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	if got := out.String(); got != `a€\x1bb` {
		t.Errorf("before Flush: %q", got)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != `a€\x1bb\xe2\x82` {
		t.Errorf("after Flush: %q", got)
	}
}

func TestWriterConcurrent(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	w := NewWriter(&out)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				w.Write([]byte("ü\x1b\n"))
			}
		}()
	}
	wg.Wait()
	if got, want := out.String(), strings.Repeat(`ü\x1b`+"\n", 800); got != want {
		t.Errorf("concurrent writes interleaved: %d bytes, want %d", len(got), len(want))
	}
}

func TestUnsafe(t *testing.T) {
	t.Parallel()
	for _, r := range []rune{0, 7, '\r', 0x1b, 0x7f, 0x85, 0x9b, 0x202e, 0x2066} {
		if !Unsafe(r) {
			t.Errorf("Unsafe(%U) = false", r)
		}
	}
	for _, r := range []rune{'\n', '\t', ' ', 'a', 'ü', 0xa0, 0x2028, '🙂'} {
		if Unsafe(r) {
			t.Errorf("Unsafe(%U) = true", r)
		}
	}
}
