package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/progress"
)

// ConfigStep is the journal's step name for a config that could not be read.
const ConfigStep = "config"

// Outcome is how a run ended; the CLI maps it to an exit status.
type Outcome int

const (
	// Finished: every selected step is done (exit 0).
	Finished Outcome = iota
	// RebootRequested: a step needs a reboot, which was requested (exit 0).
	RebootRequested
	// Failed: a step failed or a failure from an earlier boot still stands
	// (exit 1).
	Failed
	// Refused: the run did not start (--only dependencies, another instance
	// running) (exit 1).
	Refused
	// Interrupted: the context was cancelled (shutdown); the step in progress
	// is redone on the next run (exit 1).
	Interrupted
)

// ExitCode maps an outcome to the process exit status.
func (o Outcome) ExitCode() int {
	if o == Finished || o == RebootRequested {
		return 0
	}
	return 1
}

// Display shows progress to a person at the Pi (progress.Display).
type Display interface {
	Say(line string)
	LED(p progress.Pattern)
}

// Engine runs steps in order against Env, journaling every event.
type Engine struct {
	Steps []Step
	Env   *Env
	// ConfigSHA256 is the hex sha256 of the config file as read; recorded
	// with a failure so a changed config is recognised as a person's action.
	ConfigSHA256 string
	// Out receives every line the engine and steps report (the service's
	// stdout, i.e. the system journal). Nil discards.
	Out io.Writer
	// Display is the consoles and LED; nil shows nothing.
	Display Display

	w      *journal.Writer
	j      *journal.Journal
	bootID string
	boot   int
}

// UsageError is a wrong --only list (exit 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func (e *Engine) bootDir() string { return e.Env.Path(e.Env.BootDir) }

func (e *Engine) markerPath() string {
	return filepath.Join(e.bootDir(), cardpath.Failed)
}

// LogLine writes a line to the install log (and Out); the CLI routes the
// runner's quoted argv here.
func (e *Engine) LogLine(line string) {
	if e.Out != nil {
		fmt.Fprintln(e.Out, line)
	}
	if e.w != nil {
		if err := e.w.Log(line); err != nil && e.Out != nil {
			fmt.Fprintf(e.Out, "install log: %v\n", err)
		}
	}
}

// say goes to Out, the install log and every console.
func (e *Engine) say(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	e.LogLine(line)
	if e.Display != nil {
		e.Display.Say(line)
	}
}

func (e *Engine) led(p progress.Pattern) {
	if e.Display != nil {
		e.Display.LED(p)
	}
}

func (e *Engine) stepNames() []string {
	names := make([]string, len(e.Steps))
	for i, s := range e.Steps {
		names[i] = s.Name()
	}
	return names
}

// Select returns the steps --only names, in canonical order; empty only
// means all steps.
func (e *Engine) Select(only []string) ([]Step, error) {
	if len(only) == 0 {
		return e.Steps, nil
	}
	names := e.stepNames()
	known := map[string]bool{}
	for _, n := range names {
		known[n] = true
	}
	want := map[string]bool{}
	for _, n := range only {
		if !known[n] {
			return nil, &UsageError{fmt.Errorf("--only: unknown step %q (steps: %s)", n, strings.Join(names, ","))}
		}
		want[n] = true
	}
	var sel []Step
	for _, s := range e.Steps {
		if want[s.Name()] {
			sel = append(sel, s)
		}
	}
	return sel, nil
}

// checkNeeds refuses a selection whose steps depend on a step that is
// neither selected earlier nor done according to the journal.
func (e *Engine) checkNeeds(sel []Step) error {
	selected := map[string]bool{}
	for _, s := range sel {
		for _, need := range s.Needs() {
			if selected[need] {
				continue
			}
			last, ok := e.j.Last(need)
			if !ok || (last.Event != journal.Done && last.Event != journal.Skip) {
				state := "never ran"
				if ok {
					state = "its last event is " + string(last.Event)
				}
				return fmt.Errorf("step %s needs step %s, which is not done (%s): add %s to --only or run it first", s.Name(), need, state, need)
			}
		}
		selected[s.Name()] = true
	}
	return nil
}

func (e *Engine) readBootID() string {
	data, err := os.ReadFile(e.Env.Path("/proc/sys/kernel/random/boot_id"))
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(data))
}

func (e *Engine) loadState() error {
	if e.Env.State == nil {
		e.Env.State = &journal.State{}
	}
	raw := e.j.LastState()
	if raw == nil {
		return nil
	}
	if err := json.Unmarshal(raw, e.Env.State); err != nil {
		return fmt.Errorf("journal: saved state: %w", err)
	}
	return nil
}

// activeFailure returns the failure that still stops the install: the
// journal's last entry, when it is a failure.
func (e *Engine) activeFailure() (journal.Entry, bool) {
	if n := len(e.j.Entries); n > 0 && e.j.Entries[n-1].Event == journal.Fail {
		return e.j.Entries[n-1], true
	}
	return journal.Entry{}, false
}

// failureStands reports whether an earlier failure still stops the install,
// and if not, why it is retried.
func (e *Engine) failureStands(f journal.Entry) (bool, string) {
	// An empty recorded digest is a config that could not be read then: one
	// that can be read now is a change too.
	if e.ConfigSHA256 != "" && f.ConfigSHA256 != e.ConfigSHA256 {
		return false, "the config changed"
	}
	if _, err := os.Stat(e.markerPath()); errors.Is(err, fs.ErrNotExist) {
		return false, cardpath.Failed + " was removed"
	}
	return true, ""
}

func (e *Engine) open() error {
	dir := e.bootDir()
	w, err := journal.Create(dir)
	if err != nil {
		if problem := cardProblem(err); problem != "" {
			return WithHint(fmt.Errorf("the SD card itself is %s: %w", problem, err), cardFix(problem))
		}
		return WithHint(err, "check that the card's FAT partition is mounted read-write at "+e.Env.BootDir)
	}
	// A second instance (the unit started twice, a person running it by
	// hand) must not interleave with the first.
	if err := syscall.Flock(int(w.File().Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		w.Close()
		return fmt.Errorf("another nixpi-firstboot is already running (journal %q is locked): %w", dir, err)
	}
	e.w = w
	j, err := journal.ReadFile(dir)
	if err != nil {
		return err
	}
	e.j = j
	e.bootID = e.readBootID()
	e.boot = j.BootNumber(e.bootID)
	return e.loadState()
}

func (e *Engine) close() {
	if e.w != nil {
		e.w.Close()
		e.w = nil
	}
}

func (e *Engine) append(step string, ev journal.Event, msg, hint, configSum string) error {
	entry := journal.Entry{
		Step: step, Event: ev, Time: e.Env.Clock().UTC(), Boot: e.boot, BootID: e.bootID,
		Msg: msg, Hint: hint, ConfigSHA256: configSum,
	}
	if e.Env.State != nil {
		st, err := json.Marshal(e.Env.State)
		if err != nil {
			return fmt.Errorf("journal: state: %w", err)
		}
		entry.State = st
	}
	if err := e.w.Append(entry); err != nil {
		return err
	}
	e.j.Entries = append(e.j.Entries, entry)
	return nil
}

func (e *Engine) prepareEnv() {
	if e.Env.Progress == nil {
		e.Env.Progress = func(format string, args ...any) { e.say("  "+format, args...) }
	}
	if e.Env.LED == nil {
		e.Env.LED = e.led
	}
	e.Env.Boot = e.boot
}

// Run runs the selected steps (all when only is empty). The returned error
// explains Failed, Refused and Interrupted outcomes; it is already recorded
// and shown.
func (e *Engine) Run(ctx context.Context, only []string) (Outcome, error) {
	sel, err := e.Select(only)
	if err != nil {
		return Refused, err
	}
	if err := e.open(); err != nil {
		e.close()
		e.say("cannot start: %v", err)
		if hint := HintOf(err); hint != "" {
			e.say("fix: %s", hint)
		}
		e.led(progress.Failed)
		return Refused, err
	}
	defer e.close()
	e.prepareEnv()
	e.Env.State.Steps = e.stepNames()

	if f, ok := e.activeFailure(); ok {
		stands, why := e.failureStands(f)
		if stands {
			e.showFailure(f)
			return Failed, fmt.Errorf("step %s failed in boot %d: %s", f.Step, f.Boot, f.Msg)
		}
		e.say("retrying after the failure of step %s in boot %d: %s", f.Step, f.Boot, why)
		if err := os.Remove(e.markerPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return e.fail(ConfigStep, fmt.Errorf("remove failure marker: %w", err))
		}
	}
	if ho := e.Env.State.HandOver; ho != nil && ho.Finished && !e.Env.OnNixOS && len(only) == 0 {
		// The card boots again after a finished hand-over: restored by a
		// person (nixpi restore-card). Nothing may retire it again.
		sel = afterHandOver(sel)
	}
	if err := e.checkNeeds(sel); err != nil {
		e.say("refused: %v", err)
		return Refused, err
	}

	e.led(progress.Working)
	for i, step := range sel {
		name := step.Name()
		what := ""
		if d, ok := step.(Describer); ok {
			what = ": " + d.Describe()
		}
		e.say("step %d of %d, %s%s", i+1, len(sel), name, what)
		out, err := e.runStep(ctx, step)
		if out != Finished || err != nil {
			return out, err
		}
	}
	e.led(progress.Finished)
	e.say("all %d steps done.%s", len(sel), e.doneMessage())
	return Finished, nil
}

func afterHandOver(steps []Step) []Step {
	var sel []Step
	for _, s := range steps {
		if _, ok := s.(AfterHandOver); ok {
			sel = append(sel, s)
		}
	}
	return sel
}

func (e *Engine) runStep(ctx context.Context, step Step) (Outcome, error) {
	name := step.Name()
	r := e.resumeOf(ctx, step)
	switch r.action {
	case resumeAwaitReboot:
		e.say("  %s is waiting for the reboot it requested; nothing more to do in this boot", name)
		return RebootRequested, nil
	case resumeRedo:
		e.say("  %s was interrupted in boot %d; redoing it from its start", name, r.last.Boot)
	case resumeCheckFailed:
		return e.failOrInterrupt(ctx, name, fmt.Errorf("%s: check: %w", name, r.err))
	case resumeSkip:
		e.say("  %s: %s, skipping", name, r.why)
		if err := e.append(name, journal.Skip, r.why, "", ""); err != nil {
			return e.fail(name, err)
		}
		return Finished, nil
	case resumeRebootNotTaken:
		if reporter, ok := step.(NotTakenReporter); ok {
			return e.fail(name, reporter.NotTaken(e.Env, r.last.Boot, r.why))
		}
		return e.fail(name, WithHint(
			fmt.Errorf("%s: still not in effect after the reboot requested in boot %d (%s)", name, r.last.Boot, r.why),
			"the change made before the reboot did not take effect; see "+cardpath.Log+" on the card"))
	case resumeRun:
		e.say("  %s: %s", name, r.why)
	}
	if err := e.append(name, journal.Start, "", "", ""); err != nil {
		return e.fail(name, err)
	}
	e.Env.rebootWhy, e.Env.tryboot = "", false
	e.Env.Redo = r.action == resumeRedo
	err := step.Run(ctx, e.Env)
	e.Env.Redo = false
	if err != nil {
		return e.failOrInterrupt(ctx, name, err)
	}
	if why := e.Env.rebootWhy; why != "" {
		e.Env.rebootWhy = ""
		reboot := e.Env.Machine.Reboot
		if e.Env.tryboot {
			reboot = e.Env.Machine.TryReboot
		}
		// The step's files and the journal entry are on the card before the
		// reboot: the next boot decides by them.
		if e.Env.Machine != nil {
			if err := e.Env.Machine.Sync(ctx); err != nil {
				return e.fail(name, fmt.Errorf("sync before the reboot: %w", err))
			}
		}
		if err := e.append(name, journal.Reboot, why, "", ""); err != nil {
			return e.fail(name, err)
		}
		e.say("  %s: rebooting to %s", name, why)
		if err := reboot(ctx); err != nil {
			// Cancelled means the shutdown is under way (this service is
			// stopped first): not a failure, the next boot goes on.
			return e.failOrInterrupt(ctx, name, WithHint(err, "power the Pi off and on; the install continues after the boot"))
		}
		return RebootRequested, nil
	}
	// What the step wrote must be on its disks before the journal says it
	// is done: after a power cut a file may otherwise be there but empty
	// (ext4's delayed allocation), and the rerun would trust it.
	if e.Env.Machine != nil {
		if err := e.Env.Machine.Sync(ctx); err != nil {
			return e.fail(name, fmt.Errorf("sync after %s: %w", name, err))
		}
	}
	if err := e.append(name, journal.Done, "", "", ""); err != nil {
		return e.fail(name, err)
	}
	return Finished, nil
}

// failOrInterrupt records err as a failure unless the context was cancelled
// (shutdown): interrupted is not failed, and the step is redone next boot.
func (e *Engine) failOrInterrupt(ctx context.Context, step string, err error) (Outcome, error) {
	if ctx.Err() != nil {
		e.say("  %s interrupted (%v); it is redone from its start on the next run", step, ctx.Err())
		return Interrupted, fmt.Errorf("%s: interrupted: %w", step, err)
	}
	return e.fail(step, err)
}

const defaultHint = "read " + cardpath.Log + " on the card for the commands run and their output"

// fail records err for step, leaves the failure marker and shows the
// report. The install stays stopped until a person acts.
func (e *Engine) fail(step string, err error) (Outcome, error) {
	hint := HintOf(err)
	if hint == "" {
		hint = defaultHint
	}
	entry := journal.Entry{Step: step, Event: journal.Fail, Boot: e.boot, Msg: err.Error(), Hint: hint}
	var cardErr error
	if e.w != nil {
		if jerr := e.append(step, journal.Fail, err.Error(), hint, e.ConfigSHA256); jerr != nil {
			cardErr = jerr
		}
		if merr := writeMarker(e.markerPath(), entry); merr != nil {
			cardErr = errors.Join(cardErr, merr)
		}
	}
	if problem := cardProblem(cardErr); problem != "" {
		// Nothing on the card says what happened, and its log is cut
		// short: the console must say it all, the card's own state first.
		e.say("INSTALL STOPPED: step %s failed in boot %d: %s", step, e.boot, err)
		e.say("the SD card itself is %s, so this failure is not recorded on it (no %s) and %s is incomplete", problem,
			cardpath.Failed, cardpath.Log)
		e.say("fix: %s; then power the Pi off and on to retry", cardFix(problem))
		e.led(progress.Failed)
		return Failed, errors.Join(err, cardErr)
	}
	e.showFailure(entry)
	return Failed, errors.Join(err, cardErr)
}

// cardProblem names what is wrong with the card itself when err is the card
// refusing a write: "full" or "read-only"; "" for anything else.
func cardProblem(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "full"
	case errors.Is(err, syscall.EROFS):
		return "read-only"
	}
	return ""
}

// cardFix is what to do about a full or read-only card.
func cardFix(problem string) string {
	if problem == "full" {
		return "make room on the card's FAT partition (delete files added to it besides nixpi/), or write the image to a larger card"
	}
	return "the card went read-only: check its write-protect switch (SD adapters have one), or write the image to another card (a card that turns read-only is failing)"
}

// RecordFailure records a failure found before any step ran (an unreadable
// config) under step, with the same report and marker as a step failure.
func (e *Engine) RecordFailure(step string, err error) (Outcome, error) {
	if oerr := e.open(); oerr != nil {
		e.close()
		e.led(progress.Failed)
		return Failed, errors.Join(err, oerr)
	}
	defer e.close()
	if f, ok := e.activeFailure(); ok {
		if stands, _ := e.failureStands(f); stands {
			// Nobody acted since: show it again, do not grow the journal.
			e.showFailure(f)
			return Failed, err
		}
	}
	return e.fail(step, err)
}

// HookStep is the journal's name for the first-boot hook, which installs
// the service before any step can run.
const HookStep = "hook"

// RecordHook journals the first-boot hook's outcome: a failure, so that
// status and nixpi report show it as they show a step's; a success only when
// it ends such a failure, so that it does not stop the service.
func (e *Engine) RecordHook(hookErr error) error {
	if hookErr == nil {
		// Without a hook failure to end, the card is left as it is.
		j, err := journal.ReadFile(e.bootDir())
		if err != nil {
			return err
		}
		if n := len(j.Entries); n == 0 || j.Entries[n-1].Step != HookStep || j.Entries[n-1].Event != journal.Fail {
			return nil
		}
	}
	if err := e.open(); err != nil {
		e.close()
		return err
	}
	defer e.close()
	if hookErr == nil {
		return e.append(HookStep, journal.Done, "service installed", "", "")
	}
	hint := HintOf(hookErr)
	if hint == "" {
		hint = "the card may be damaged: write the image to it again"
	}
	return e.append(HookStep, journal.Fail, hookErr.Error(), hint, "")
}

func failureReport(f journal.Entry) []string {
	marker := cardpath.Failed
	return []string{
		fmt.Sprintf("INSTALL STOPPED: step %s failed in boot %d: %s", f.Step, f.Boot, f.Msg),
		"fix: " + f.Hint,
		fmt.Sprintf("then, on the card's FAT partition, change %s or delete %s, and power the Pi off and on to retry.", cardpath.Config, marker),
	}
}

func (e *Engine) showFailure(f journal.Entry) {
	for _, line := range failureReport(f) {
		e.say("%s", line)
	}
	e.led(progress.Failed)
}

func writeMarker(path string, f journal.Entry) error {
	text := strings.Join(failureReport(f), "\n") + "\n"
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("failure marker: %w", err)
	}
	_, werr := fh.WriteString(text)
	serr := fh.Sync()
	if err := errors.Join(werr, serr, fh.Close()); err != nil {
		// An empty or cut marker would stop the install without saying why.
		_ = os.Remove(path)
		return fmt.Errorf("failure marker %q: %w", path, err)
	}
	return nil
}

// doneMessage says what is true once the selected steps are done. The
// hand-over's reboot step ends a normal install before this line; when the
// service gets this far, the card booted again after the hand-over (the
// SSD did not boot, and the order falls back to the card), or the step
// list has no hand-over.
func (e *Engine) doneMessage() string {
	var left []string
	for _, s := range e.Steps {
		if last, ok := e.j.Last(s.Name()); !ok || (last.Event != journal.Done && last.Event != journal.Skip) {
			left = append(left, s.Name())
		}
	}
	if len(left) > 0 {
		return " Not done yet: " + strings.Join(left, ", ") + "."
	}
	if ho := e.Env.State.HandOver; ho != nil && ho.Finished {
		if e.Env.OnNixOS {
			return " " + ho.ConfirmLine() + "."
		}
		return fmt.Sprintf(" The hand-over is done (%s; BOOT_ORDER %s), yet the Pi booted this card: it was made bootable again (nixpi restore-card), or the SSD no longer boots (check that it is connected directly, not through a hub). See nixpi report on this card.", ho.ConfirmLine(), ho.BootOrder)
	}
	return " NixOS is installed on the SSD, but no hand-over ran: the Pi still boots from this card." + reachMessage(e.Env)
}

// reachMessage tells a person how to reach the installed system once it runs.
func reachMessage(env *Env) string {
	cfg := env.Config
	if cfg == nil {
		return ""
	}
	host := cfg.System.Hostname
	if host == "" {
		host = "nixos"
	}
	var users []string
	for _, u := range cfg.Users {
		if len(u.SSHKeys) > 0 || u.PasswordHash != "" {
			users = append(users, u.Name)
		}
	}
	if len(users) == 0 {
		return fmt.Sprintf(" Once it runs, log in on the console of %s.", host)
	}
	// The generated configuration publishes no mDNS name (avahi's options
	// are being reshaped in nixpkgs), so HOST.local is not promised.
	return fmt.Sprintf(" Once it runs, reach it with: ssh %s@ADDRESS, the address your router lists for %s.", users[0], host)
}

// Plan prints, for --dry-run, what Run would do: the failure state and each
// selected step's probe result. It writes nothing and starts no step.
func (e *Engine) Plan(ctx context.Context, only []string, w io.Writer) error {
	sel, err := e.Select(only)
	if err != nil {
		return err
	}
	j, err := journal.ReadFile(e.bootDir())
	if err != nil {
		return err
	}
	e.j = j
	e.bootID = e.readBootID()
	e.boot = j.BootNumber(e.bootID)
	if err := e.loadState(); err != nil {
		return err
	}
	if e.Env.Progress == nil {
		e.Env.Progress = func(format string, args ...any) { fmt.Fprintf(w, "    "+format+"\n", args...) }
	}
	fmt.Fprintf(w, "dry run, boot %d: nothing is changed\n", e.boot)
	if f, ok := e.activeFailure(); ok {
		if stands, why := e.failureStands(f); stands {
			fmt.Fprintf(w, "stopped: step %s failed in boot %d: %s\n  a run would only show this report again\n", f.Step, f.Boot, f.Msg)
		} else {
			fmt.Fprintf(w, "step %s failed in boot %d; a run would retry because %s\n", f.Step, f.Boot, why)
		}
	}
	if err := e.checkNeeds(sel); err != nil {
		fmt.Fprintf(w, "refused: %v\n", err)
		return err
	}
	for i, step := range sel {
		fmt.Fprintf(w, "%d/%d %s: %s\n", i+1, len(sel), step.Name(), e.planStep(ctx, step))
	}
	return nil
}

// planStep says what Run would do with step. The probe runs first, so the
// commands it logs come before the step's line.
func (e *Engine) planStep(ctx context.Context, step Step) string {
	r := e.resumeOf(ctx, step)
	switch r.action {
	case resumeAwaitReboot:
		return "waiting for the reboot it requested"
	case resumeRedo:
		return fmt.Sprintf("interrupted in boot %d, would redo from its start", r.last.Boot)
	case resumeCheckFailed:
		return fmt.Sprintf("check failed: %v", r.err)
	case resumeSkip:
		return fmt.Sprintf("done, would skip (%s)", r.why)
	case resumeRebootNotTaken:
		return fmt.Sprintf("still not in effect after the reboot requested in boot %d (%s): would stop with a failure", r.last.Boot, r.why)
	}
	return fmt.Sprintf("would run (%s)", r.why)
}
