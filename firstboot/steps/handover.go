package steps

import (
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
)

// HandOver returns the steps that hand the Pi over from the card to the SSD,
// in order; they go after verify, once NixOS is installed and checked on the
// SSD. Nothing the Pi boots from is changed before the installed NixOS has
// confirmed that it boots: eeprom sets the boot order and reads it back
// after a reboot, trial boots the SSD once, confirm is NixOS's word from the
// SSD, and only then do scrub, retire and done run, on NixOS (the confirm
// unit runs the card's own binary) or, after a power cut there, on the card.
// scrub runs before retire, since a retired card never runs the service
// again.
func HandOver() []engine.Step {
	return []engine.Step{NewEEPROM(), NewTrial(), NewConfirm(), NewScrub(), NewRetire(), NewDone(), NewReboot()}
}

// NixOSSteps are the steps `nixpi-firstboot confirm` runs on the installed
// NixOS, against the card's journal.
func NixOSSteps() []string {
	return []string{"trial", "confirm", "scrub", "retire", "done", "reboot"}
}

// handOver returns the state's hand-over record, creating it.
func handOver(env *engine.Env) *journal.HandOver {
	if env.State.HandOver == nil {
		env.State.HandOver = &journal.HandOver{}
	}
	return env.State.HandOver
}
