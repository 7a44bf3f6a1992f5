package journal

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzRead: Read never panics on what a card holds; every entry it keeps
// has a step and an event, every non-empty line is counted once (entry,
// unreadable or newer), the entries it read write back to the same
// entries, and Print renders any journal.
func FuzzRead(f *testing.F) {
	at := time.Date(2026, 11, 25, 1, 0, 0, 0, time.UTC)
	var good bytes.Buffer
	for _, e := range []Entry{
		{V: 1, Step: "preflight", Event: Done, Time: at, Boot: 1, BootID: "a"},
		{V: 1, Step: "target", Event: Fail, Time: at, Boot: 2, Msg: `two USB disks: "/dev/sda"`, Hint: "unplug one", State: json.RawMessage(`{"disk":"/dev/sda"}`)},
	} {
		line, _ := json.Marshal(e)
		good.Write(append(line, '\n'))
	}
	f.Add(good.Bytes())
	f.Add(append(good.Bytes(), `{"v":1,"step":"tar`...))
	f.Add([]byte(`{"v":2,"what":"preflight"}` + "\n\n  \r\n" + `{"v":1,"step":"x","event":"start","time":"bad"}`))
	f.Add([]byte("\x00\xff\x1b[2J\n{}\n[]\nnull\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := Read(bytes.NewReader(data))
		if err != nil {
			return // a line over the scanner's 16 MiB bound
		}
		lines := 0
		for _, l := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(l)) > 0 {
				lines++
			}
		}
		if got := len(j.Entries) + j.Skipped + j.Newer; got != lines {
			t.Fatalf("%d entries + %d unreadable + %d newer for %d lines", len(j.Entries), j.Skipped, j.Newer, lines)
		}
		var again bytes.Buffer
		for _, e := range j.Entries {
			if e.Step == "" || e.Event == "" {
				t.Fatalf("entry without step or event: %+v", e)
			}
			line, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("marshal %+v: %v", e, err)
			}
			again.Write(append(line, '\n'))
		}
		back, err := Read(&again)
		if err != nil || len(back.Entries) != len(j.Entries) || back.Skipped+back.Newer != 0 {
			t.Fatalf("entries written back read as %+v, %v", back, err)
		}
		var out strings.Builder
		if err := Print(&out, j); err != nil {
			t.Fatal(err)
		}
	})
}
