package journal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)

func TestAppendReadRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	entries := []Entry{
		{Step: "preflight", Event: Start, Time: t0, Boot: 1, BootID: "a"},
		{Step: "preflight", Event: Done, Time: t0.Add(time.Second), Boot: 1, BootID: "a", State: json.RawMessage(`{"ram_bytes":1024}`)},
		{Step: "format", Event: Fail, Time: t0.Add(2 * time.Second), Boot: 1, BootID: "a", Msg: "boom", Hint: "fix it", ConfigSHA256: "abc"},
	}
	for _, e := range entries {
		if err := w.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	j, err := ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Entries) != 3 || j.Skipped != 0 {
		t.Fatalf("got %d entries, %d skipped; want 3, 0", len(j.Entries), j.Skipped)
	}
	for i, e := range j.Entries {
		if e.V != Version || e.Step != entries[i].Step || e.Event != entries[i].Event || !e.Time.Equal(entries[i].Time) {
			t.Errorf("entry %d = %+v, want %+v", i, e, entries[i])
		}
	}
	if got := string(j.LastState()); got != `{"ram_bytes":1024}` {
		t.Errorf("LastState = %s", got)
	}
	if last, ok := j.Last("format"); !ok || last.Msg != "boom" || last.ConfigSHA256 != "abc" {
		t.Errorf("Last(format) = %+v, %v", last, ok)
	}
	// install.log has one readable line per event.
	_, lp := Paths(dir)
	log, err := os.ReadFile(lp)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], "format") || !strings.Contains(lines[2], "fail") || !strings.Contains(lines[2], "(hint: fix it)") {
		t.Errorf("install.log:\n%s", log)
	}
}

func TestTornLastLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(Entry{Step: "target", Event: Start, Time: t0, Boot: 1, BootID: "a"}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// A power cut in the middle of the next write.
	jp, _ := Paths(dir)
	f, err := os.OpenFile(jp, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"v":1,"step":"target","event":"do`)
	f.Close()

	j, err := ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Entries) != 1 || j.Skipped != 1 {
		t.Fatalf("torn journal: %d entries, %d skipped; want 1, 1", len(j.Entries), j.Skipped)
	}

	// The next boot appends after the torn line, on a line of its own.
	w, err = Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(Entry{Step: "target", Event: Start, Time: t0, Boot: 2, BootID: "b"}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	j, err = ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Entries) != 2 || j.Skipped != 1 || j.Entries[1].Boot != 2 {
		t.Fatalf("after resume: %d entries, %d skipped: %+v", len(j.Entries), j.Skipped, j.Entries)
	}
	var out bytes.Buffer
	if err := Print(&out, j); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "1 unreadable line(s) skipped") || !strings.Contains(out.String(), "interrupted") {
		t.Errorf("Print:\n%s", out.String())
	}
}

func TestMissingJournalIsEmpty(t *testing.T) {
	t.Parallel()
	j, err := ReadFile(filepath.Join(t.TempDir(), "nowhere"))
	if err != nil || len(j.Entries) != 0 {
		t.Fatalf("ReadFile(missing) = %+v, %v", j, err)
	}
}

func TestBootNumber(t *testing.T) {
	t.Parallel()
	j := &Journal{Entries: []Entry{
		{Step: "a", Event: Start, BootID: "x"},
		{Step: "a", Event: Done, BootID: "x"},
		{Step: "b", Event: Start, BootID: "y"},
		{Step: "b", Event: Reboot, BootID: "y"},
	}}
	for id, want := range map[string]int{"x": 1, "y": 2, "z": 3} {
		if got := j.BootNumber(id); got != want {
			t.Errorf("BootNumber(%q) = %d, want %d", id, got, want)
		}
	}
	if got := (&Journal{}).BootNumber("x"); got != 1 {
		t.Errorf("empty journal: BootNumber = %d, want 1", got)
	}
}

func TestReadSkipsGarbageAndKeepsNewerFields(t *testing.T) {
	t.Parallel()
	in := `{"v":1,"step":"a","event":"done","time":"2026-11-25T02:00:00Z","boot":1}
not json at all
{"v":2,"step":"b","event":"skip","time":"2026-11-25T02:00:01Z","boot":1,"future":"field"}
{"v":1}
`
	j, err := Read(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Entries) != 2 || j.Skipped != 2 {
		t.Fatalf("got %d entries, %d skipped; want 2, 2", len(j.Entries), j.Skipped)
	}
	if j.Entries[1].V != 2 || j.Entries[1].Event != Skip {
		t.Errorf("newer entry = %+v", j.Entries[1])
	}
}

func TestPrintFailureShowsHint(t *testing.T) {
	t.Parallel()
	j := &Journal{Entries: []Entry{
		{Step: "preflight", Event: Done, Time: t0, Boot: 1},
		{Step: "target", Event: Fail, Time: t0, Boot: 1, Msg: "two USB disks", Hint: "unplug one"},
	}}
	var out bytes.Buffer
	if err := Print(&out, j); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"preflight  done", "FAILED: two USB disks", "fix: unplug one"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Print output lacks %q:\n%s", want, out.String())
		}
	}
}

// Random bytes are not "empty", and a newer version's lines are not torn.
func TestPrintDamagedAndNewer(t *testing.T) {
	t.Parallel()
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i*7919>>3) ^ byte(i)
	}
	garbage = append(garbage, "\nnot json either\n"...)
	j, err := Read(bytes.NewReader(garbage))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := Print(&out, j); err != nil {
		t.Fatal(err)
	}
	if len(j.Entries) != 0 || j.Skipped == 0 || !strings.Contains(out.String(), "no journal entry could be read") || strings.Contains(out.String(), "empty") {
		t.Errorf("random bytes: %+v\n%s", j, out.String())
	}

	newer := `{"v":1,"step":"preflight","event":"done","time":"2026-11-25T01:00:00Z","boot":1}
{"v":2,"what":"preflight","outcome":"done"}
{"v":1,"step":"tar`
	j, err = Read(strings.NewReader(newer))
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := Print(&out, j); err != nil {
		t.Fatal(err)
	}
	if len(j.Entries) != 1 || j.Skipped != 1 || j.Newer != 1 ||
		!strings.Contains(out.String(), "(1 line(s) skipped that a newer nixpi wrote, journal version > 1: read the card with a newer nixpi)") ||
		!strings.Contains(out.String(), "(1 unreadable line(s) skipped: a power cut") {
		t.Errorf("newer lines: %+v\n%s", j, out.String())
	}
}

// TestFormatEntryKeepsOneLine: a message with line breaks (a command's
// stderr, or a card made to fake entries) stays on the entry's line.
func TestFormatEntryKeepsOneLine(t *testing.T) {
	t.Parallel()
	line := FormatEntry(Entry{Step: "format", Event: Fail, Msg: "mkfs failed\n2026-11-25 03:00:00Z boot 9  done   done", Hint: "a\r\nb"})
	if strings.ContainsAny(line, "\r\n") || !strings.Contains(line, `mkfs failed\n2026-11-25`) || !strings.Contains(line, `(hint: a\r\nb)`) {
		t.Errorf("FormatEntry = %q", line)
	}
}

// The hand-over's reboot is the card's last entry: report calls it the
// reboot into the SSD, while the 64-bit switch's reboot is still a wait.
func TestPrintHandOverReboot(t *testing.T) {
	t.Parallel()
	rebooted := json.RawMessage(`{"hand_over":{"finished":true,"rebooted":true}}`)
	cases := []struct {
		name    string
		entries []Entry
		want    string
	}{
		{"hand-over reboot", []Entry{
			{Step: "arm64", Event: Reboot, Boot: 2},
			{Step: "arm64", Event: Done, Boot: 3},
			{Step: "reboot", Event: Reboot, Boot: 3, State: rebooted},
		}, "reboot     rebooted into the SSD in boot 3"},
		{"64-bit switch pending", []Entry{
			{Step: "arm64", Event: Reboot, Boot: 2},
		}, "arm64      waiting for the reboot requested in boot 2"},
		{"hand-over not asked yet", []Entry{
			{Step: "reboot", Event: Reboot, Boot: 3, State: json.RawMessage(`{"hand_over":{"finished":true}}`)},
		}, "reboot     waiting for the reboot requested in boot 3"},
	}
	for _, c := range cases {
		var out bytes.Buffer
		if err := Print(&out, &Journal{Entries: c.entries}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("%s: Print lacks %q:\n%s", c.name, c.want, out.String())
		}
	}
}

// A failed step's message and hint, in the steps summary, and every
// hand-over value read from the card stay on their line and show no
// control character raw.
func TestPrintAndHandOverKeepOneLine(t *testing.T) {
	t.Parallel()
	const fake = "busy\nINSTALL COMPLETE: NixOS runs from the SSD\x1b[2J"
	j := &Journal{Entries: []Entry{{Step: "target", Event: Fail, Time: t0, Boot: 1, Msg: fake, Hint: fake}}}
	var out bytes.Buffer
	if err := Print(&out, j); err != nil {
		t.Fatal(err)
	}
	ho := &HandOver{BootOrder: fake, Retired: fake, Logins: []string{fake}, Confirmed: &Confirmation{Boot: 2, Addresses: []string{fake}}}
	text := out.String() + ho.ConfirmLine() + "\n" + strings.Join(ho.Report(), "\n")
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "INSTALL COMPLETE") || strings.Contains(line, "\x1b") {
			t.Errorf("a value from the card broke out of its line: %q\n%s", line, text)
		}
	}
	if !strings.Contains(text, `FAILED: busy\nINSTALL COMPLETE: NixOS runs from the SSD\x1b[2J`) || !strings.Contains(text, `retired    busy\nINSTALL`) {
		t.Errorf("values not shown escaped:\n%s", text)
	}
}

// A line longer than MaxLine (a 20 MB one, from damage or a hostile card)
// is skipped and named by its number; the lines around it are still read,
// and so is a line of exactly MaxLine bytes.
func TestReadBoundsEachLineNotTheFile(t *testing.T) {
	t.Parallel()
	entry := func(step string) string {
		return `{"v":1,"step":"` + step + `","event":"done","time":"2026-11-25T01:00:00Z","boot":1}` + "\n"
	}
	padded := entry("exact")
	padded = padded[:len(padded)-2] + `,"x":"` + strings.Repeat("y", MaxLine-len(padded)-6) + `"}` + "\n"
	if len(padded) != MaxLine+1 {
		t.Fatalf("test line is %d bytes, want %d", len(padded), MaxLine+1)
	}
	data := entry("before") + strings.Repeat("x", 20<<20) + "\n" + entry("after") + padded + strings.Repeat("z", MaxLine+1)
	j, err := Read(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, e := range j.Entries {
		steps = append(steps, e.Step)
	}
	if strings.Join(steps, " ") != "before after exact" || fmt.Sprint(j.TooLong) != "[2 5]" || j.Skipped != 0 {
		t.Errorf("steps %v, too long %v, skipped %d; want before after exact, [2 5], 0", steps, j.TooLong, j.Skipped)
	}
	var out strings.Builder
	if err := Print(&out, j); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"journal line 2 is longer than 1048576 bytes (1 MiB), skipped", "journal line 5 is longer", "after"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Print lacks %q:\n%s", want, out.String())
		}
	}
	// Only too-long lines: not "empty", which would say the Pi never started.
	j, err = Read(strings.NewReader(strings.Repeat("x", 2*MaxLine)))
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	Print(&out, j)
	if strings.Contains(out.String(), "journal is empty") || !strings.Contains(out.String(), "journal line 1 is longer") {
		t.Errorf("a journal of one long line prints:\n%s", out.String())
	}
}
