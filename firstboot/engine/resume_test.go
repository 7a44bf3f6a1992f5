package engine

import (
	"errors"
	"testing"

	"github.com/nixpi/nixpi/firstboot/journal"
)

// TestDecideResume is the table of what a run does with a step, which Run
// and Plan both act on. The probe runs only when the journal does not
// decide: a redo must not trust a half-made effect, and a step waiting for
// its reboot has nothing to check yet.
func TestDecideResume(t *testing.T) {
	t.Parallel()
	const thisBoot, lastBoot = "boot-2", "boot-1"
	entry := func(ev journal.Event, bootID string) journal.Entry {
		return journal.Entry{Step: "s", Event: ev, BootID: bootID, Boot: 1}
	}
	checkErr := errors.New("lsblk failed")
	for _, tc := range []struct {
		name   string
		last   journal.Entry
		seen   bool
		done   bool
		err    error
		want   resumeAction
		probed bool
	}{
		{"never seen, not in place", journal.Entry{}, false, false, nil, resumeRun, true},
		{"never seen, in place", journal.Entry{}, false, true, nil, resumeSkip, true},
		{"never seen, the check fails", journal.Entry{}, false, false, checkErr, resumeCheckFailed, true},
		{"done before, undone since", entry(journal.Done, lastBoot), true, false, nil, resumeRun, true},
		{"done before, still in place", entry(journal.Done, lastBoot), true, true, nil, resumeSkip, true},
		{"failed before, retried", entry(journal.Fail, lastBoot), true, false, nil, resumeRun, true},
		{"skipped before", entry(journal.Skip, lastBoot), true, true, nil, resumeSkip, true},
		{"started and never finished", entry(journal.Start, lastBoot), true, true, nil, resumeRedo, false},
		{"started in this boot (a crashed run)", entry(journal.Start, thisBoot), true, false, nil, resumeRedo, false},
		{"reboot asked in this boot", entry(journal.Reboot, thisBoot), true, false, nil, resumeAwaitReboot, false},
		{"reboot asked in this boot, probe would say done", entry(journal.Reboot, thisBoot), true, true, nil, resumeAwaitReboot, false},
		{"reboot taken, in effect", entry(journal.Reboot, lastBoot), true, true, nil, resumeSkip, true},
		{"reboot taken, not in effect", entry(journal.Reboot, lastBoot), true, false, nil, resumeRebootNotTaken, true},
		{"reboot taken, the check fails", entry(journal.Reboot, lastBoot), true, false, checkErr, resumeCheckFailed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			probed := false
			r := decideResume(tc.last, tc.seen, thisBoot, func() (bool, string, error) {
				probed = true
				return tc.done, "found", tc.err
			})
			if r.action != tc.want || probed != tc.probed {
				t.Errorf("action %d (probed %v), want %d (probed %v)", r.action, probed, tc.want, tc.probed)
			}
			if r.last.Event != tc.last.Event || r.last.BootID != tc.last.BootID || r.last.Boot != tc.last.Boot {
				t.Errorf("last %+v, want %+v", r.last, tc.last)
			}
			if tc.probed && (r.why != "found" || !errors.Is(r.err, tc.err)) {
				t.Errorf("why %q, err %v: the probe's finding is lost", r.why, r.err)
			}
		})
	}
}
