package builder

import (
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder/buildertest"
)

func TestDeviceBinaryPerArch(t *testing.T) {
	t.Parallel()
	get := buildertest.DeviceBinaries(t)
	for _, arch := range []string{"arm64", "armhf"} {
		if _, err := deviceBinary(get, arch); err != nil {
			t.Errorf("deviceBinary(%s): %v", arch, err)
		}
	}
	if _, err := deviceBinary(get, "amd64"); err == nil || !strings.Contains(err.Error(), `"amd64"`) {
		t.Errorf("deviceBinary(amd64) error = %v, want one naming the architecture", err)
	}
}

func TestDeviceBinaryRejectsWrongMachine(t *testing.T) {
	t.Parallel()
	get := buildertest.DeviceBinaries(t)
	swapped := func(goarch string) ([]byte, error) {
		if goarch == "arm64" {
			return get("arm")
		}
		return get("arm64")
	}
	for _, arch := range []string{"arm64", "armhf"} {
		if _, err := deviceBinary(swapped, arch); err == nil || !strings.Contains(err.Error(), "want an") {
			t.Errorf("deviceBinary(%s) with the other arch's binary: error = %v", arch, err)
		}
	}
	notELF := func(string) ([]byte, error) { return []byte("#!/bin/sh\n"), nil }
	if _, err := deviceBinary(notELF, "arm64"); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("deviceBinary with a shell script: error = %v", err)
	}
}
