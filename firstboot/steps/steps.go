// Package steps holds the device service's steps, one file each, in the order
// All lists them. Every step probes before it acts and can be rerun from its
// start after a power cut.
package steps

import "github.com/nixpi/nixpi/firstboot/engine"

// All returns the steps in the order they run. Their names are the names on
// the command line (--only) and in the journal.
func All() []engine.Step {
	return append([]engine.Step{
		NewPreflight(),
		NewArm64(),
		NewPackages(),
		NewTarget(),
		NewPartition(),
		NewFormat(),
		NewMount(),
		NewNetwork(),
		NewNix(),
		NewNixpkgs(),
		NewConfigure(),
		NewSystem(),
		NewInstall(),
		NewFirmware(),
		NewVerify(),
	}, HandOver()...)
}
