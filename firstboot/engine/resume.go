package engine

import (
	"context"

	"github.com/nixpi/nixpi/firstboot/journal"
)

// resumeAction is what a run does with a step, given the journal and the
// step's probe. Run acts on it and Plan (--dry-run) describes it, so a dry
// run says what a run does.
type resumeAction int

const (
	// resumeRun: the probe finds the effect not in place; run the step.
	resumeRun resumeAction = iota
	// resumeSkip: the probe finds the effect in place.
	resumeSkip
	// resumeRedo: an earlier boot started the step and never finished it
	// (a power cut, a shutdown). It is run again from its start without a
	// probe, which could mistake a half-made effect for a made one.
	resumeRedo
	// resumeAwaitReboot: the step asked for a reboot in this boot, which
	// has not come yet; nothing more runs in this boot.
	resumeAwaitReboot
	// resumeRebootNotTaken: the step asked for a reboot, it came, and the
	// probe still finds the effect not in place. The step fails: one
	// reboot per request, never a reboot loop.
	resumeRebootNotTaken
	// resumeCheckFailed: the probe itself failed.
	resumeCheckFailed
)

// resume is the decision for one step and what it rests on.
type resume struct {
	action resumeAction
	last   journal.Entry // the step's last journal entry; zero when none
	why    string        // the probe's finding, when it ran
	err    error         // the probe's error, for resumeCheckFailed
}

// decideResume decides what a run does with a step whose last journal
// entry is last (seen false: none) in the boot bootID. probe runs only when
// the journal alone does not decide.
func decideResume(last journal.Entry, seen bool, bootID string, probe func() (bool, string, error)) resume {
	r := resume{last: last}
	switch {
	case seen && last.Event == journal.Reboot && last.BootID == bootID:
		r.action = resumeAwaitReboot
		return r
	case seen && last.Event == journal.Start:
		r.action = resumeRedo
		return r
	}
	done, why, err := probe()
	r.why, r.err = why, err
	switch {
	case err != nil:
		r.action = resumeCheckFailed
	case done:
		r.action = resumeSkip
	case seen && last.Event == journal.Reboot:
		r.action = resumeRebootNotTaken
	default:
		r.action = resumeRun
	}
	return r
}

// resumeOf is decideResume for step with this engine's journal and boot.
func (e *Engine) resumeOf(ctx context.Context, step Step) resume {
	last, seen := e.j.Last(step.Name())
	return decideResume(last, seen, e.bootID, func() (bool, string, error) { return step.Probe(ctx, e.Env) })
}
