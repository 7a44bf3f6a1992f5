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
