package steps

import "github.com/nixpi/nixpi/firstboot/engine"

// HandOver returns the steps that hand the Pi over from the card to the SSD,
// in order; they go after verify, once NixOS is installed and checked on the
// SSD (before that, retiring the card would leave a Pi that boots nothing).
// scrub runs before retire, since a retired card never runs the service
// again.
func HandOver() []engine.Step {
	return []engine.Step{NewEEPROM(), NewScrub(), NewRetire(), NewDone(), NewReboot()}
}
