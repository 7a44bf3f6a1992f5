package engine_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/progress"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

const bootDir = "/boot/firmware"

// fakeStep is a step whose probe and action the test scripts.
type fakeStep struct {
	name  string
	needs []string
	mu    sync.Mutex
	done  bool // what Probe reports
	// run is called by Run; nil means "succeed and become done".
	run    func(ctx context.Context, env *engine.Env) error
	runs   int
	probes int
}

func (s *fakeStep) Name() string    { return s.name }
func (s *fakeStep) Needs() []string { return s.needs }
func (s *fakeStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.probes++
	if s.done {
		return true, s.name + " already in place", nil
	}
	return false, s.name + " not in place", nil
}
func (s *fakeStep) Run(ctx context.Context, env *engine.Env) error {
	s.mu.Lock()
	s.runs++
	run := s.run
	s.mu.Unlock()
	if run != nil {
		return run(ctx, env)
	}
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	return nil
}

// display records what a person would have seen.
type display struct {
	lines []string
	leds  []progress.Pattern
}

func (d *display) Say(line string)        { d.lines = append(d.lines, line) }
func (d *display) LED(p progress.Pattern) { d.leds = append(d.leds, p) }
func (d *display) text() string           { return strings.Join(d.lines, "\n") }
func (d *display) lastLED() progress.Pattern {
	if len(d.leds) == 0 {
		return -1
	}
	return d.leds[len(d.leds)-1]
}

// machine is one Pi across boots: a temp root whose boot id changes on
// every boot(), and a recording Machine.
type machine struct {
	t       *testing.T
	root    string
	boots   int
	reboots *systemtest.Machine
	config  string
}

func newMachine(t *testing.T) *machine {
	t.Helper()
	m := &machine{t: t, root: t.TempDir(), reboots: &systemtest.Machine{}, config: "schema = 1\n"}
	if err := os.MkdirAll(filepath.Join(m.root, bootDir), 0o755); err != nil {
		t.Fatal(err)
	}
	m.boot()
	return m
}

func (m *machine) boot() {
	m.boots++
	p := filepath.Join(m.root, "proc/sys/kernel/random/boot_id")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(p, fmt.Appendf(nil, "boot-%d\n", m.boots), 0o644); err != nil {
		m.t.Fatal(err)
	}
}

func (m *machine) engine(steps ...engine.Step) (*engine.Engine, *display, *bytes.Buffer) {
	d := &display{}
	out := &bytes.Buffer{}
	sum := sha256.Sum256([]byte(m.config))
	return &engine.Engine{
		Steps:        steps,
		Env:          &engine.Env{Root: m.root, BootDir: bootDir, Machine: m.reboots, Run: &systemtest.Runner{}},
		ConfigSHA256: fmt.Sprintf("%x", sum),
		Out:          out,
		Display:      d,
	}, d, out
}

func (m *machine) journal() *journal.Journal {
	m.t.Helper()
	j, err := journal.ReadFile(filepath.Join(m.root, bootDir))
	if err != nil {
		m.t.Fatal(err)
	}
	return j
}

// events renders the journal as "step:event" words.
func (m *machine) events() string {
	var parts []string
	for _, e := range m.journal().Entries {
		parts = append(parts, e.Step+":"+string(e.Event))
	}
	return strings.Join(parts, " ")
}

func (m *machine) marker() string {
	return filepath.Join(m.root, bootDir, cardpath.Failed)
}

func TestRunsStepsInOrderThenSkipsDone(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	a, b := &fakeStep{name: "a"}, &fakeStep{name: "b", needs: []string{"a"}}
	eng, d, _ := m.engine(a, b)
	out, err := eng.Run(context.Background(), nil)
	if err != nil || out != engine.Finished || out.ExitCode() != 0 {
		t.Fatalf("Run = %v, %v", out, err)
	}
	if got, want := m.events(), "a:start a:done b:start b:done"; got != want {
		t.Errorf("journal = %q, want %q", got, want)
	}
	if !strings.Contains(d.text(), "step 1 of 2, a") || !strings.Contains(d.text(), "step 2 of 2, b") {
		t.Errorf("console:\n%s", d.text())
	}
	if d.leds[0] != progress.Working || d.lastLED() != progress.Finished {
		t.Errorf("LED patterns = %v", d.leds)
	}

	m.boot()
	eng, _, _ = m.engine(a, b)
	if out, err := eng.Run(context.Background(), nil); err != nil || out != engine.Finished {
		t.Fatalf("second Run = %v, %v", out, err)
	}
	if a.runs != 1 || b.runs != 1 {
		t.Errorf("runs a=%d b=%d, want 1 each", a.runs, b.runs)
	}
	j := m.journal()
	if got, want := m.events(), "a:start a:done b:start b:done a:skip b:skip"; got != want {
		t.Errorf("journal = %q, want %q", got, want)
	}
	if last := j.Entries[len(j.Entries)-1]; last.Boot != 2 || last.Msg != "b already in place" {
		t.Errorf("last entry = %+v", last)
	}
}

type crash struct{ point string }

func TestResumeRedoesInterruptedStepFromItsStart(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	a := &fakeStep{name: "a"}
	b := &fakeStep{name: "b"}
	var redo []bool
	b.run = func(ctx context.Context, env *engine.Env) error {
		redo = append(redo, env.Redo)
		env.State.RAMBytes = 42 // learned before the power cut
		env.Crash("b-half-done")
		b.done = true
		return nil
	}
	eng, _, _ := m.engine(a, b)
	eng.Env.CrashPoint = func(p string) { panic(crash{p}) }
	func() {
		defer func() {
			if r := recover(); r != (crash{"b-half-done"}) {
				t.Fatalf("recover() = %v, want the crash", r)
			}
		}()
		eng.Run(context.Background(), nil)
	}()
	if got, want := m.events(), "a:start a:done b:start"; got != want {
		t.Fatalf("journal after crash = %q, want %q", got, want)
	}

	m.boot()
	// Whatever the probe would say now, the interrupted step is redone.
	b.done = true
	probesBefore := b.probes
	eng, d, _ := m.engine(a, b)
	out, err := eng.Run(context.Background(), nil)
	if err != nil || out != engine.Finished {
		t.Fatalf("Run after crash = %v, %v", out, err)
	}
	if b.runs != 2 || b.probes != probesBefore {
		t.Errorf("b: runs=%d probes=%d (before %d); want it rerun without a probe", b.runs, b.probes, probesBefore)
	}
	if got, want := m.events(), "a:start a:done b:start a:skip b:start b:done"; got != want {
		t.Errorf("journal = %q, want %q", got, want)
	}
	if !strings.Contains(d.text(), "b was interrupted in boot 1; redoing it from its start") {
		t.Errorf("console:\n%s", d.text())
	}
	if eng.Env.State.RAMBytes != 42 {
		t.Errorf("state was not carried over: %+v", eng.Env.State)
	}
	if fmt.Sprint(redo) != "[false true]" || eng.Env.Redo {
		t.Errorf("Env.Redo in b's runs = %v (after: %v), want [false true] and false after", redo, eng.Env.Redo)
	}
}

func TestFailureStaysUntilMarkerRemoved(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	a := &fakeStep{name: "a"}
	attempts := 0
	b := &fakeStep{name: "b", run: func(ctx context.Context, env *engine.Env) error {
		attempts++
		if attempts == 1 {
			return engine.WithHint(errors.New("disk too small"), "use a bigger disk")
		}
		return nil
	}}
	c := &fakeStep{name: "c"}
	eng, d, _ := m.engine(a, b, c)
	out, err := eng.Run(context.Background(), nil)
	if out != engine.Failed || out.ExitCode() != 1 || err == nil {
		t.Fatalf("Run = %v, %v; want Failed", out, err)
	}
	if c.runs != 0 {
		t.Error("a step after the failed one ran")
	}
	j := m.journal()
	last := j.Entries[len(j.Entries)-1]
	if last.Event != journal.Fail || last.Msg != "disk too small" || last.Hint != "use a bigger disk" || last.ConfigSHA256 != eng.ConfigSHA256 {
		t.Errorf("fail entry = %+v", last)
	}
	marker, err := os.ReadFile(m.marker())
	if err != nil || !strings.Contains(string(marker), "disk too small") || !strings.Contains(string(marker), "delete nixpi/FAILED") {
		t.Errorf("marker = %q, %v", marker, err)
	}
	if d.lastLED() != progress.Failed || !strings.Contains(d.text(), "INSTALL STOPPED: step b failed in boot 1: disk too small") {
		t.Errorf("display: LED %v\n%s", d.leds, d.text())
	}

	// Later boots show the report again and change nothing.
	for i := 0; i < 2; i++ {
		m.boot()
		n := len(m.journal().Entries)
		eng, d, _ = m.engine(a, b, c)
		if out, _ := eng.Run(context.Background(), nil); out != engine.Failed {
			t.Fatalf("boot %d: Run = %v, want Failed", m.boots, out)
		}
		if attempts != 1 || len(m.journal().Entries) != n {
			t.Fatalf("boot %d: step retried (%d attempts) or journal grew", m.boots, attempts)
		}
		if !strings.Contains(d.text(), "INSTALL STOPPED: step b failed in boot 1") || d.lastLED() != progress.Failed {
			t.Errorf("boot %d: report not shown again:\n%s", m.boots, d.text())
		}
	}

	// A person deletes the marker: the next boot retries.
	if err := os.Remove(m.marker()); err != nil {
		t.Fatal(err)
	}
	m.boot()
	eng, d, _ = m.engine(a, b, c)
	if out, err := eng.Run(context.Background(), nil); out != engine.Finished || err != nil {
		t.Fatalf("after removing the marker: Run = %v, %v", out, err)
	}
	if attempts != 2 || c.runs != 1 {
		t.Errorf("attempts=%d c.runs=%d, want 2 and 1", attempts, c.runs)
	}
	if !strings.Contains(d.text(), "retrying after the failure of step b in boot 1: nixpi/FAILED was removed") {
		t.Errorf("console:\n%s", d.text())
	}
}

func TestChangedConfigRetriesAndClearsMarker(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	fails := true
	a := &fakeStep{name: "a", run: func(ctx context.Context, env *engine.Env) error {
		if fails {
			return errors.New("bad setting")
		}
		return nil
	}}
	eng, _, _ := m.engine(a)
	if out, _ := eng.Run(context.Background(), nil); out != engine.Failed {
		t.Fatalf("Run = %v", out)
	}
	m.boot()
	fails = false
	m.config = "schema = 1\n# edited\n"
	eng, d, _ := m.engine(a)
	if out, err := eng.Run(context.Background(), nil); out != engine.Finished || err != nil {
		t.Fatalf("Run after config change = %v, %v", out, err)
	}
	if !strings.Contains(d.text(), "the config changed") {
		t.Errorf("console:\n%s", d.text())
	}
	if _, err := os.Stat(m.marker()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("marker still there after a successful retry: %v", err)
	}
}

func TestOnlyRefusesMissingDependency(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	target := &fakeStep{name: "target"}
	part := &fakeStep{name: "partition", needs: []string{"target"}}
	pre := &fakeStep{name: "preflight"}
	steps := []engine.Step{pre, target, part}

	eng, _, _ := m.engine(steps...)
	out, err := eng.Run(context.Background(), []string{"partition"})
	if out != engine.Refused || out.ExitCode() != 1 || err == nil || !strings.Contains(err.Error(), "needs step target, which is not done (never ran)") {
		t.Fatalf("--only partition: %v, %v", out, err)
	}
	if part.runs != 0 || len(m.journal().Entries) != 0 {
		t.Fatal("refused run changed something")
	}

	// Named together they run in canonical order, whatever the order given.
	eng, _, _ = m.engine(steps...)
	if out, err := eng.Run(context.Background(), []string{"partition", "target"}); out != engine.Finished || err != nil {
		t.Fatalf("--only partition,target: %v, %v", out, err)
	}
	if got, want := m.events(), "target:start target:done partition:start partition:done"; got != want {
		t.Errorf("journal = %q, want %q", got, want)
	}
	if pre.runs != 0 {
		t.Error("preflight ran although not selected")
	}
	// With target done in the journal, partition alone is allowed.
	eng, _, _ = m.engine(steps...)
	if out, err := eng.Run(context.Background(), []string{"partition"}); out != engine.Finished || err != nil {
		t.Fatalf("--only partition after target: %v, %v", out, err)
	}

	eng, _, _ = m.engine(steps...)
	_, err = eng.Run(context.Background(), []string{"nope"})
	var ue *engine.UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), `unknown step "nope" (steps: preflight,target,partition)`) {
		t.Errorf("unknown step: %v", err)
	}
}

// tree lists every file under root with its content.
func tree(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			lines = append(lines, rel+"/")
			return nil
		}
		data, err := os.ReadFile(path)
		lines = append(lines, fmt.Sprintf("%s %x", rel, sha256.Sum256(data)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestDryRunTouchesNothing(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	a := &fakeStep{name: "a", done: true}
	b := &fakeStep{name: "b"}
	for _, withJournal := range []bool{false, true} {
		if withJournal {
			// An interrupted b from an earlier boot.
			w, err := journal.Create(filepath.Join(m.root, bootDir))
			if err != nil {
				t.Fatal(err)
			}
			w.Append(journal.Entry{Step: "b", Event: journal.Start, Boot: 1, BootID: "boot-1"})
			w.Close()
		}
		before := tree(t, m.root)
		eng, d, _ := m.engine(a, b)
		var out bytes.Buffer
		if err := eng.Plan(context.Background(), nil, &out); err != nil {
			t.Fatal(err)
		}
		if after := tree(t, m.root); after != before {
			t.Errorf("dry run changed the root:\n--- before\n%s\n--- after\n%s", before, after)
		}
		if a.runs+b.runs != 0 || len(d.lines)+len(d.leds) != 0 || m.reboots.Reboots() != 0 {
			t.Errorf("dry run acted: runs %d, display %v %v", a.runs+b.runs, d.lines, d.leds)
		}
		want := []string{"1/2 a: done, would skip (a already in place)", "2/2 b: would run (b not in place)"}
		if withJournal {
			want[1] = "2/2 b: interrupted in boot 1, would redo from its start"
		}
		for _, w := range want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("plan lacks %q:\n%s", w, out.String())
			}
		}
	}
}

func TestRebootIsRequestedOnceNeverLooped(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	arm := &fakeStep{name: "arm64"}
	arm.run = func(ctx context.Context, env *engine.Env) error {
		env.RequestReboot("start the 64-bit kernel")
		return nil
	}
	next := &fakeStep{name: "next"}
	eng, _, _ := m.engine(arm, next)
	out, err := eng.Run(context.Background(), nil)
	if out != engine.RebootRequested || out.ExitCode() != 0 || err != nil {
		t.Fatalf("Run = %v, %v", out, err)
	}
	if m.reboots.Reboots() != 1 || next.runs != 0 {
		t.Fatalf("reboots=%d next.runs=%d", m.reboots.Reboots(), next.runs)
	}
	if got, want := m.events(), "arm64:start arm64:reboot"; got != want {
		t.Errorf("journal = %q, want %q", got, want)
	}
	// Run again before the reboot happened: nothing more, no second reboot.
	eng, _, _ = m.engine(arm, next)
	if out, _ := eng.Run(context.Background(), nil); out != engine.RebootRequested || m.reboots.Reboots() != 1 {
		t.Fatalf("same boot: %v, reboots %d", out, m.reboots.Reboots())
	}
	// The reboot did not take effect: fail instead of rebooting again.
	m.boot()
	eng, _, _ = m.engine(arm, next)
	out, err = eng.Run(context.Background(), nil)
	if out != engine.Failed || m.reboots.Reboots() != 1 || !strings.Contains(err.Error(), "still not in effect after the reboot requested in boot 1") {
		t.Fatalf("after ineffective reboot: %v, %v, reboots %d", out, err, m.reboots.Reboots())
	}
	// Had it worked, the probe sees it and the install goes on.
	m2 := newMachine(t)
	arm2 := &fakeStep{name: "arm64", run: arm.run}
	eng, _, _ = m2.engine(arm2, next)
	eng.Run(context.Background(), nil)
	m2.boot()
	arm2.done = true
	eng, _, _ = m2.engine(arm2, next)
	if out, err := eng.Run(context.Background(), nil); out != engine.Finished || err != nil {
		t.Fatalf("after effective reboot: %v, %v", out, err)
	}
	if got, want := m2.events(), "arm64:start arm64:reboot arm64:skip next:start next:done"; got != want {
		t.Errorf("journal = %q, want %q", got, want)
	}
}

func TestRebootFailureIsRecorded(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	m.reboots.Err = errors.New("systemctl: connection refused")
	arm := &fakeStep{name: "arm64", run: func(ctx context.Context, env *engine.Env) error {
		env.RequestReboot("start the 64-bit kernel")
		return nil
	}}
	eng, _, _ := m.engine(arm)
	out, err := eng.Run(context.Background(), nil)
	if out != engine.Failed || err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Run = %v, %v", out, err)
	}
	if last, _ := m.journal().Last("arm64"); last.Event != journal.Fail || !strings.Contains(last.Hint, "power the Pi off and on") {
		t.Errorf("last = %+v", last)
	}
}

// shutdownMachine is a reboot request cut short because the shutdown it
// started stops the service first.
type shutdownMachine struct{ cancel context.CancelFunc }

func (shutdownMachine) Sync(context.Context) error { return nil }

func (m shutdownMachine) TryReboot(ctx context.Context) error { return m.Reboot(ctx) }

func (m shutdownMachine) Reboot(ctx context.Context) error {
	m.cancel()
	return fmt.Errorf("reboot: %w", ctx.Err())
}

func TestRebootCutShortByShutdownIsNotAFailure(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	ctx, cancel := context.WithCancel(context.Background())
	arm := &fakeStep{name: "arm64", run: func(ctx context.Context, env *engine.Env) error {
		env.RequestReboot("start the 64-bit kernel")
		return nil
	}}
	eng, _, _ := m.engine(arm)
	eng.Env.Machine = shutdownMachine{cancel}
	if out, err := eng.Run(ctx, nil); out != engine.Interrupted || err == nil {
		t.Fatalf("Run = %v, %v", out, err)
	}
	if got := m.events(); got != "arm64:start arm64:reboot" {
		t.Errorf("journal = %q, want the reboot and no failure", got)
	}
	if _, err := os.Stat(m.marker()); !errors.Is(err, fs.ErrNotExist) {
		t.Error("a reboot cut short by the shutdown left a failure marker")
	}
	// After the reboot the 64-bit kernel runs: done, no failure to clear.
	m.boot()
	arm.done = true
	eng, _, _ = m.engine(arm)
	if out, err := eng.Run(context.Background(), nil); out != engine.Finished || err != nil {
		t.Fatalf("after the reboot: %v, %v", out, err)
	}
}

func TestShutdownInterruptsWithoutFailing(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	ctx, cancel := context.WithCancel(context.Background())
	a := &fakeStep{name: "a", run: func(ctx context.Context, env *engine.Env) error {
		cancel()
		return ctx.Err()
	}}
	eng, _, _ := m.engine(a)
	out, err := eng.Run(ctx, nil)
	if out != engine.Interrupted || out.ExitCode() != 1 || err == nil {
		t.Fatalf("Run = %v, %v", out, err)
	}
	if got := m.events(); got != "a:start" {
		t.Errorf("journal = %q, want a:start only", got)
	}
	if _, err := os.Stat(m.marker()); !errors.Is(err, fs.ErrNotExist) {
		t.Error("an interruption left a failure marker")
	}
}

func TestSecondInstanceRefused(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	w, err := journal.Create(filepath.Join(m.root, bootDir))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := syscall.Flock(int(w.File().Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	a := &fakeStep{name: "a"}
	eng, _, _ := m.engine(a)
	out, err := eng.Run(context.Background(), nil)
	if out != engine.Refused || err == nil || !strings.Contains(err.Error(), "already running") || a.runs != 0 {
		t.Fatalf("Run = %v, %v (runs %d)", out, err, a.runs)
	}
}

func TestRecordFailureOfConfig(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	cfgErr := engine.WithHint(errors.New("nixpi.toml:3: unknown key \"disks\""), "fix nixpi.toml")
	eng, d, _ := m.engine()
	if out, _ := eng.RecordFailure(engine.ConfigStep, cfgErr); out != engine.Failed {
		t.Fatalf("RecordFailure = %v", out)
	}
	if got := m.events(); got != "config:fail" {
		t.Fatalf("journal = %q", got)
	}
	if !strings.Contains(d.text(), `step config failed in boot 1: nixpi.toml:3: unknown key "disks"`) {
		t.Errorf("console:\n%s", d.text())
	}
	// Same config next boot: report again, journal unchanged.
	m.boot()
	eng, _, _ = m.engine()
	eng.RecordFailure(engine.ConfigStep, cfgErr)
	if got := m.events(); got != "config:fail" {
		t.Errorf("journal grew: %q", got)
	}
	// Edited but still wrong: recorded anew.
	m.config = "schema = 1\n[disks]\n"
	eng, _, _ = m.engine()
	eng.RecordFailure(engine.ConfigStep, cfgErr)
	if got := m.events(); got != "config:fail config:fail" {
		t.Errorf("journal = %q", got)
	}
}

func TestUnwritableCardRefusesVisibly(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	// nixpi/ is a file, so the journal cannot be created (as on a card
	// mounted read-only).
	if err := os.WriteFile(filepath.Join(m.root, bootDir, "nixpi"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a := &fakeStep{name: "a"}
	eng, d, _ := m.engine(a)
	out, err := eng.Run(context.Background(), nil)
	if out != engine.Refused || out.ExitCode() != 1 || err == nil || a.runs != 0 {
		t.Fatalf("Run = %v, %v (runs %d)", out, err, a.runs)
	}
	if !strings.Contains(d.text(), "cannot start: journal:") || !strings.Contains(d.text(), "fix: check that the card's FAT partition is mounted read-write") || d.lastLED() != progress.Failed {
		t.Errorf("display: %v\n%s", d.leds, d.text())
	}
}

// TestFullOrReadOnlyCardSaysSo: the card's FAT partition (a small tmpfs
// here, as root) fills up while a step runs, or is read-only from the start.
// No empty nixpi/FAILED is left, and the console says the card itself is full
// or read-only instead of pointing at a log that could not be written.
func TestFullOrReadOnlyCardSaysSo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a small tmpfs as the card needs root")
	}
	card := func(t *testing.T, m *machine, opts string) string {
		dir := filepath.Join(m.root, bootDir)
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "nixpi-test-card", dir).CombinedOutput(); err != nil {
			t.Skipf("skipping: mount tmpfs: %v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
		return dir
	}
	check := func(t *testing.T, m *machine, d *display, want ...string) {
		t.Helper()
		if _, err := os.Stat(m.marker()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a failure marker was left (stat: %v)", err)
		}
		for _, w := range want {
			if !strings.Contains(d.text(), w) {
				t.Errorf("console does not say %q:\n%s", w, d.text())
			}
		}
		if strings.Contains(d.text(), "read nixpi/install.log") || d.lastLED() != progress.Failed {
			t.Errorf("console points at the log, or LED %v:\n%s", d.lastLED(), d.text())
		}
	}

	t.Run("full", func(t *testing.T) {
		m := newMachine(t)
		dir := card(t, m, "size=256k")
		a := &fakeStep{name: "a", run: func(ctx context.Context, env *engine.Env) error {
			f, err := os.Create(filepath.Join(dir, "photos.zip"))
			if err != nil {
				return err
			}
			defer f.Close()
			for {
				if _, err := f.Write(make([]byte, 64<<10)); err != nil {
					return fmt.Errorf("a: copy the photos: %w", err)
				}
			}
		}}
		eng, d, _ := m.engine(a)
		if out, err := eng.Run(context.Background(), nil); out != engine.Failed || err == nil {
			t.Fatalf("Run = %v, %v", out, err)
		}
		check(t, m, d, "INSTALL STOPPED: step a failed in boot 1: a: copy the photos:",
			"the SD card itself is full, so this failure is not recorded on it (no nixpi/FAILED) and nixpi/install.log is incomplete",
			"fix: make room on the card's FAT partition", "; then power the Pi off and on to retry")
	})
	t.Run("read-only", func(t *testing.T) {
		m := newMachine(t)
		card(t, m, "ro,size=256k")
		a := &fakeStep{name: "a"}
		eng, d, _ := m.engine(a)
		if out, err := eng.Run(context.Background(), nil); out != engine.Refused || err == nil || a.runs != 0 {
			t.Fatalf("Run = %v, %v (runs %d)", out, err, a.runs)
		}
		check(t, m, d, "cannot start: the SD card itself is read-only: journal:", "fix: the card went read-only: check its write-protect switch")
	})
}

func TestDoneMessageSaysWhatIsTrue(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	a, b := &fakeStep{name: "a"}, &fakeStep{name: "b", needs: []string{"a"}}
	eng, d, _ := m.engine(a, b)
	if out, err := eng.Run(context.Background(), []string{"a"}); err != nil || out != engine.Finished {
		t.Fatalf("Run --only a = %v, %v", out, err)
	}
	if !strings.Contains(d.text(), "all 1 steps done. Not done yet: b.") || strings.Contains(d.text(), "NixOS is installed") {
		t.Errorf("after --only a:\n%s", d.text())
	}
	cfg, err := config.Parse("nixpi.toml", []byte("schema = 1\n[system]\nhostname = \"barpi\"\n[[users]]\nname = \"pi\"\nssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINs/P2AHuutJrx8BjqQ9lRPc2W6FzD+noshMtddXmn3s pi@laptop\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	eng, d, _ = m.engine(a, b)
	eng.Env.Config = cfg
	if out, err := eng.Run(context.Background(), nil); err != nil || out != engine.Finished {
		t.Fatalf("Run = %v, %v", out, err)
	}
	want := "all 2 steps done. NixOS is installed on the SSD, but no hand-over ran: the Pi still boots from this card. Once it runs, reach it with: ssh pi@ADDRESS, the address your router lists for barpi."
	if !strings.Contains(d.text(), want) {
		t.Errorf("console:\n%s\nwant a line with %q", d.text(), want)
	}

	// The card booted again after a finished hand-over: restored, or the SSD
	// no longer boots.
	m2 := newMachine(t)
	handOver := &fakeStep{name: "done", run: func(ctx context.Context, env *engine.Env) error {
		env.State.HandOver = &journal.HandOver{Finished: true, BootOrder: "0xf14"}
		return nil
	}}
	eng, d, _ = m2.engine(handOver)
	eng.Env.Config = cfg
	if out, err := eng.Run(context.Background(), nil); err != nil || out != engine.Finished {
		t.Fatalf("Run = %v, %v", out, err)
	}
	if want := "yet the Pi booted this card: it was made bootable again (nixpi restore-card), or the SSD no longer boots"; !strings.Contains(d.text(), want) || !strings.Contains(d.text(), "BOOT_ORDER 0xf14") {
		t.Errorf("after the hand-over, console:\n%s\nwant a line with %q", d.text(), want)
	}
}

// TestStepIsSyncedBeforeDone: what a step wrote is flushed to disk before
// its done entry, once per step that ran (a skipped one wrote nothing).
func TestStepIsSyncedBeforeDone(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	synced := -1
	a := &fakeStep{name: "a"}
	b := &fakeStep{name: "b", run: func(ctx context.Context, env *engine.Env) error {
		synced = m.reboots.Syncs()
		return nil
	}}
	eng, _, _ := m.engine(a, b)
	if out, err := eng.Run(context.Background(), nil); out != engine.Finished || err != nil {
		t.Fatalf("Run = %v, %v", out, err)
	}
	if synced != 1 || m.reboots.Syncs() != 2 {
		t.Errorf("syncs: %d when b ran (want 1, after a), %d in all (want 2)", synced, m.reboots.Syncs())
	}
}
