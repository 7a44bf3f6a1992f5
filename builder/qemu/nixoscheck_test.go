package qemu

import "testing"

func TestCompareInstalledBlanksOnlyTheDiskIDsHashes(t *testing.T) {
	t.Parallel()
	const (
		sysA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-pi"
		sysB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-pi"
		kern = "11111111111111111111111111111111-linux"
	)
	spec := func(sys, initrdSum, kernelSum string, extra ...string) *InstalledSpec {
		return &InstalledSpec{
			System:      "/nix/store/" + sys,
			Generations: []string{"system-1-link -> /nix/store/" + sys},
			StorePaths:  append([]string{sys, kern}, extra...),
			BootFiles: []InstalledFile{
				{Path: "nixos/" + kern + "-Image", Sum: kernelSum},
				{Path: "nixos/" + sys[:32] + "-initrd", Sum: initrdSum},
				{Path: "config.txt", Sum: "c0"},
			},
		}
	}
	want := spec(sysA, "i1", "k1")
	if p := CompareInstalled("other IDs", spec(sysB, "i2", "k1"), want); len(p) > 0 {
		t.Errorf("two installs that differ only in the disk IDs' hashes: %v", p)
	}
	for name, got := range map[string]*InstalledSpec{
		"the same kernel path with other bytes": spec(sysB, "i2", "k2"),
		"a store path more":                     spec(sysB, "i2", "k1", "cccccccccccccccccccccccccccccccc-leftover"),
		"the same initrd path with other bytes": spec(sysA, "i2", "k1"),
	} {
		if p := CompareInstalled(name, got, want); len(p) == 0 {
			t.Errorf("%s: not reported", name)
		}
	}
}
