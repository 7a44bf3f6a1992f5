package builder

import (
	"bytes"
	"debug/elf"
	"fmt"
)

// deviceGOARCH maps an image's userland architecture (Debian's name, from
// builder/baseimage) to the GOARCH of the nixpi-firstboot that runs there.
func deviceGOARCH(imageArch string) (string, error) {
	switch imageArch {
	case "arm64":
		return "arm64", nil
	case "armhf":
		return "arm", nil
	}
	return "", fmt.Errorf("no nixpi-firstboot for userland architecture %q: nixpi supports arm64 and armhf Raspberry Pi images", imageArch)
}

// deviceBinary fetches nixpi-firstboot for imageArch and checks that it is a
// static Linux ELF executable for that machine, so a mix-up of binaries is
// caught on the workstation rather than as "exec format error" on the Pi.
func deviceBinary(get func(goarch string) ([]byte, error), imageArch string) ([]byte, error) {
	goarch, err := deviceGOARCH(imageArch)
	if err != nil {
		return nil, err
	}
	if get == nil {
		return nil, fmt.Errorf("no source of device binaries configured")
	}
	bin, err := get(goarch)
	if err != nil {
		return nil, fmt.Errorf("nixpi-firstboot for linux/%s: %w", goarch, err)
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return nil, fmt.Errorf("nixpi-firstboot for linux/%s is not an ELF executable: %w", goarch, err)
	}
	defer f.Close()
	want := map[string]elf.Machine{"arm64": elf.EM_AARCH64, "arm": elf.EM_ARM}[goarch]
	if f.Machine != want || f.Type != elf.ET_EXEC {
		return nil, fmt.Errorf("nixpi-firstboot for linux/%s is a %v %v file, want an %v executable", goarch, f.Machine, f.Type, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("nixpi-firstboot for linux/%s is dynamically linked: build it with CGO_ENABLED=0", goarch)
		}
	}
	return bin, nil
}
