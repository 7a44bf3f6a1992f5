// Package journal is the install's record on the card's FAT partition:
// nixpi/journal.jsonl (versioned JSON lines, one per event, for programs) and
// nixpi/install.log (plain lines, for people). Every write is appended and
// fsynced on its own: a rename is not crash-safe on FAT, so readers instead
// tolerate a torn line left by a power cut.
package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/termtext"
)

// Version is written as "v" in every entry. Readers skip nothing they do
// not understand: unknown fields are ignored, so later versions only add.
const Version = 1

// Event is what happened to a step.
type Event string

const (
	Start Event = "start" // the step's action began
	Done  Event = "done"  // the action finished
	Skip  Event = "skip"  // the probe found the effect already in place
	Fail  Event = "fail"  // the action (or a check) failed; the service stopped
	// Reboot means the step finished its action but its effect needs a
	// reboot; the step counts as done once its probe agrees after that boot.
	Reboot Event = "reboot"
)

// Entry is one line of journal.jsonl.
type Entry struct {
	V     int       `json:"v"`
	Step  string    `json:"step"`
	Event Event     `json:"event"`
	Time  time.Time `json:"time"`
	// Boot counts the distinct boots the journal has seen, from 1.
	Boot   int    `json:"boot"`
	BootID string `json:"boot_id,omitempty"`
	Msg    string `json:"msg,omitempty"`
	Hint   string `json:"hint,omitempty"`
	// ConfigSHA256 is the config file's digest when a step failed: a changed
	// config on a later boot means a person acted, so the step is retried.
	ConfigSHA256 string `json:"config_sha256,omitempty"`
	// State is the service's persisted State at this event.
	State json.RawMessage `json:"state,omitempty"`
}

// Paths gives the journal and log paths under a FAT mount point.
func Paths(bootDir string) (journalPath, logPath string) {
	return filepath.Join(bootDir, cardpath.Journal), filepath.Join(bootDir, cardpath.Log)
}

// Writer appends to both files. It is not safe for concurrent use.
type Writer struct {
	journal *os.File
	log     *os.File
}

// Create opens (creating when missing) nixpi/journal.jsonl and
// nixpi/install.log under bootDir for appending. A torn last line left by a
// power cut is closed with a newline so the next entry starts cleanly.
func Create(bootDir string) (*Writer, error) {
	jp, lp := Paths(bootDir)
	if err := os.MkdirAll(filepath.Dir(jp), 0o755); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j, err := openAppend(jp)
	if err != nil {
		return nil, err
	}
	l, err := openAppend(lp)
	if err != nil {
		j.Close()
		return nil, err
	}
	return &Writer{journal: j, log: l}, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := closeTornLine(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("journal: %q: %w", path, err)
	}
	return f, nil
}

// closeTornLine appends "\n" when the file does not end in one.
func closeTornLine(f *os.File) error {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return err
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, st.Size()-1); err != nil {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	if _, err := f.Write([]byte("\n")); err != nil {
		return err
	}
	return f.Sync()
}

// File returns the open journal file (the engine locks it against a second
// instance).
func (w *Writer) File() *os.File { return w.journal }

// Append writes e as one JSON line and a readable line to install.log,
// fsyncing each before returning.
func (w *Writer) Append(e Entry) error {
	e.V = Version
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	line = append(line, '\n')
	if _, err := w.journal.Write(line); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if err := w.journal.Sync(); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return w.Log(FormatEntry(e))
}

// Log appends one readable line (a command line, a warning) to install.log.
func (w *Writer) Log(line string) error {
	if _, err := io.WriteString(w.log, strings.TrimRight(line, "\n")+"\n"); err != nil {
		return fmt.Errorf("install log: %w", err)
	}
	if err := w.log.Sync(); err != nil {
		return fmt.Errorf("install log: %w", err)
	}
	return nil
}

// Close closes both files.
func (w *Writer) Close() error {
	return errors.Join(w.journal.Close(), w.log.Close())
}

// Journal is what a reader found.
type Journal struct {
	Entries []Entry
	// Skipped counts lines that did not parse: a torn line from a power cut
	// (only ever the last line written in a boot) or damage.
	Skipped int
	// Newer counts lines a later journal version wrote in a shape this
	// reader does not know (not torn: whole JSON objects).
	Newer int
	// TooLong are the numbers (from 1) of the lines longer than MaxLine,
	// skipped unread: no Pi writes one, and the rest is still read.
	TooLong []int
}

// MaxLine bounds one journal line. The journal is read line by line, so a
// damaged or hostile card's long line costs at most this much memory and
// is reported on its own; the lines around it still count.
const MaxLine = 1 << 20

// TooLongLine is how a line over MaxLine is reported.
func TooLongLine(n int) string {
	return fmt.Sprintf("journal line %d is longer than %d bytes (1 MiB), skipped: no Pi writes such a line, so the card is damaged or was written by something else", n, MaxLine)
}

// Read parses journal lines. Lines that do not parse, or are longer than
// MaxLine, are counted, not fatal; only a read error is.
func Read(r io.Reader) (*Journal, error) {
	j := &Journal{}
	br := bufio.NewReaderSize(r, 64*1024)
	var buf []byte
	for n := 1; ; n++ {
		buf = buf[:0]
		tooLong := false
		var err error
		for {
			var chunk []byte
			chunk, err = br.ReadSlice('\n')
			size := len(buf) + len(bytes.TrimSuffix(chunk, []byte("\n")))
			if !tooLong && size > MaxLine {
				tooLong, buf = true, buf[:0]
			}
			if !tooLong {
				buf = append(buf, chunk...)
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("journal: line %d: %w", n, err)
		}
		if tooLong {
			j.TooLong = append(j.TooLong, n)
		} else if line := bytes.TrimSpace(buf); len(line) > 0 {
			j.add(line)
		}
		if err != nil { // io.EOF
			return j, nil
		}
	}
}

// add takes one line that fits.
func (j *Journal) add(line []byte) {
	var e Entry
	if err := json.Unmarshal(line, &e); err != nil || e.Step == "" || e.Event == "" {
		if isNewer(line) {
			j.Newer++
		} else {
			j.Skipped++
		}
		return
	}
	j.Entries = append(j.Entries, e)
}

// isNewer says whether line is a whole JSON object whose "v" is a version
// after this one.
func isNewer(line []byte) bool {
	var head struct {
		V int `json:"v"`
	}
	return json.Unmarshal(line, &head) == nil && head.V > Version
}

// ReadFile reads nixpi/journal.jsonl under bootDir; a missing file is an
// empty journal.
func ReadFile(bootDir string) (*Journal, error) {
	jp, _ := Paths(bootDir)
	f, err := os.Open(jp)
	if errors.Is(err, fs.ErrNotExist) {
		return &Journal{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	return Read(f)
}

// Last returns the last entry for step, if any.
func (j *Journal) Last(step string) (Entry, bool) {
	for i := len(j.Entries) - 1; i >= 0; i-- {
		if j.Entries[i].Step == step {
			return j.Entries[i], true
		}
	}
	return Entry{}, false
}

// BootNumber gives the number of the boot with bootID: its position among
// the distinct boot ids in the journal, or one more than their count when
// the journal has not seen it yet.
func (j *Journal) BootNumber(bootID string) int {
	seen := map[string]bool{}
	n := 0
	for _, e := range j.Entries {
		if e.BootID == "" || seen[e.BootID] {
			continue
		}
		seen[e.BootID] = true
		n++
		if e.BootID == bootID {
			return n
		}
	}
	return n + 1
}

// LastState returns the most recent persisted state, or nil.
func (j *Journal) LastState() json.RawMessage {
	for i := len(j.Entries) - 1; i >= 0; i-- {
		if len(j.Entries[i].State) > 0 {
			return j.Entries[i].State
		}
	}
	return nil
}

// CurrentState decodes the most recent persisted state; a journal without
// one gives the zero State.
func (j *Journal) CurrentState() (State, error) {
	var st State
	if raw := j.LastState(); raw != nil {
		if err := json.Unmarshal(raw, &st); err != nil {
			return State{}, fmt.Errorf("journal state: %w", err)
		}
	}
	return st, nil
}

// FormatEntry renders one entry as a line for people:
// "2026-11-25 02:31:00Z boot 2  format     done  already formatted (hint: ...)".
// Each field goes through termtext.Line: a message with a command's
// multi-line stderr, or a card made to fake lines, stays on its line.
func FormatEntry(e Entry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s boot %d  %-10s %-6s", e.Time.UTC().Format("2006-01-02 15:04:05Z"), e.Boot, termtext.Line(e.Step), termtext.Line(string(e.Event)))
	if e.Msg != "" {
		b.WriteString(" " + termtext.Line(e.Msg))
	}
	if e.Hint != "" {
		b.WriteString(" (hint: " + termtext.Line(e.Hint) + ")")
	}
	return strings.TrimRight(b.String(), " ")
}

// Print writes the journal for people: every entry, then a summary of each
// step's latest event and, when the install stopped on a failure, its hint.
func Print(w io.Writer, j *Journal) error {
	bw := bufio.NewWriter(w)
	switch {
	case len(j.Entries) > 0:
	case j.Skipped > 0:
		fmt.Fprintf(bw, "no journal entry could be read: %d line(s) are not journal lines: the file is damaged or not a nixpi journal\n", j.Skipped)
	case j.Newer == 0 && len(j.TooLong) == 0:
		fmt.Fprintln(bw, "journal is empty: the Pi has not started the install yet")
	}
	for _, e := range j.Entries {
		fmt.Fprintln(bw, FormatEntry(e))
	}
	if j.Skipped > 0 && len(j.Entries) > 0 {
		fmt.Fprintf(bw, "(%d unreadable line(s) skipped: a power cut can tear the last line written)\n", j.Skipped)
	}
	for _, n := range j.TooLong {
		fmt.Fprintf(bw, "(%s)\n", TooLongLine(n))
	}
	if j.Newer > 0 {
		fmt.Fprintf(bw, "(%d line(s) skipped that a newer nixpi wrote, journal version > %d: read the card with a newer nixpi)\n", j.Newer, Version)
	}
	if len(j.Entries) > 0 {
		fmt.Fprintln(bw, "\nsteps:")
		var order []string
		seen := map[string]bool{}
		for _, e := range j.Entries {
			if !seen[e.Step] {
				seen[e.Step] = true
				order = append(order, e.Step)
			}
		}
		// The SSD's NixOS writes nothing to the card: the hand-over's reboot
		// is the journal's last word, not a wait.
		final := j.Entries[len(j.Entries)-1]
		intoSSD := ""
		if ho := LastHandOver(j); ho != nil && ho.Rebooted && final.Event == Reboot {
			intoSSD = final.Step
		}
		for _, step := range order {
			last, _ := j.Last(step)
			fmt.Fprintf(bw, "  %-10s %s\n", termtext.Line(step), describe(last, step == intoSSD))
		}
	}
	return bw.Flush()
}

func describe(e Entry, intoSSD bool) string {
	switch e.Event {
	case Start:
		return fmt.Sprintf("interrupted (started in boot %d, never finished; redone from its start on the next run)", e.Boot)
	case Done:
		return "done"
	case Skip:
		return "done (already in place)"
	case Reboot:
		if intoSSD {
			return fmt.Sprintf("rebooted into the SSD in boot %d (the card records nothing after this)", e.Boot)
		}
		return fmt.Sprintf("waiting for the reboot requested in boot %d", e.Boot)
	case Fail:
		s := "FAILED: " + termtext.Line(e.Msg)
		if e.Hint != "" {
			s += "\n             fix: " + termtext.Line(e.Hint)
		}
		return s
	}
	return termtext.Line(string(e.Event))
}
