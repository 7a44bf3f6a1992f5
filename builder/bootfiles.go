package builder

import "github.com/nixpi/nixpi/firstboot/bootfiles"

// bootDirs are where Raspberry Pi OS mounts its FAT partition: Bookworm and
// later, then before.
var bootDirs = []string{"/boot/firmware", "/boot"}

// cmdlineHasHook says whether cmdline carries nixpi's hook for either mount
// point (a card alone does not say where its image mounts the FAT).
func cmdlineHasHook(cmdline string) bool {
	for _, dir := range bootDirs {
		if bootfiles.HasHook(cmdline, bootfiles.HookWords(dir)) {
			return true
		}
	}
	return false
}

func arm64Effective(configTxt string) (on bool, line int) {
	return bootfiles.Arm64Effective(configTxt)
}
