package engine

import "errors"

// HintError is an error with a suggested fix for the person at the Pi; the
// engine records the hint in the journal and shows it on the console.
type HintError struct {
	Err  error
	Hint string
}

func (e *HintError) Error() string { return e.Err.Error() }
func (e *HintError) Unwrap() error { return e.Err }

// WithHint attaches a suggested fix to err (nil stays nil).
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &HintError{Err: err, Hint: hint}
}

// HintOf returns the outermost hint attached to err, or "".
func HintOf(err error) string {
	var h *HintError
	if errors.As(err, &h) {
		return h.Hint
	}
	return ""
}

// Describer is implemented by steps that can say what they do and why, for
// the "step N of M" console line.
type Describer interface {
	Describe() string
}

// NotTakenReporter is implemented by steps whose reboot can fail to take
// effect in a way they can explain (a trial boot that never confirmed, an
// EEPROM update that was not flashed): the engine records the step's error
// instead of its generic "still not in effect" one.
type NotTakenReporter interface {
	// NotTaken returns the failure for a reboot requested in boot
	// requestedIn whose effect the probe, which said why, does not find.
	NotTaken(env *Env, requestedIn int, why string) error
}

// AfterHandOver is implemented by the steps that still run once the
// hand-over has finished, on a card that boots again (restored with nixpi
// restore-card): only they run then, so the card is never retired twice.
type AfterHandOver interface {
	AfterHandOver()
}
