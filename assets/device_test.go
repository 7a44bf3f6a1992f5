package assets

import (
	"errors"
	"strings"
	"testing"
)

func TestDeviceBinaryUnknownArch(t *testing.T) {
	_, err := DeviceBinary("amd64")
	if err == nil || !strings.Contains(err.Error(), `"amd64"`) {
		t.Fatalf("DeviceBinary(amd64) error = %v, want one naming the GOARCH", err)
	}
}

func TestDeviceBinaryMissingSaysRunMakeBuild(t *testing.T) {
	for _, arch := range []string{"arm64", "arm"} {
		if _, err := device.ReadFile("device/" + DeviceBinaryName(arch)); err == nil {
			t.Skipf("device binaries are embedded (make build ran); nothing missing to report")
		}
		_, err := DeviceBinary(arch)
		if !errors.Is(err, ErrNoDeviceBinary) || !strings.Contains(err.Error(), "run make build") {
			t.Errorf("DeviceBinary(%s) error = %v, want ErrNoDeviceBinary", arch, err)
		}
	}
}

func TestFirstbootUnit(t *testing.T) {
	for _, dir := range []string{"/boot/firmware", "/boot"} {
		unit, err := FirstbootUnit(dir)
		if err != nil {
			t.Fatal(err)
		}
		s := string(unit)
		for _, want := range []string{
			"Type=oneshot\n",
			"After=local-fs.target\n",
			"ConditionPathExists=" + dir + "/nixpi/nixpi.toml\n",
			"ExecStart=/usr/local/sbin/nixpi-firstboot run --config " + dir + "/nixpi/nixpi.toml --boot-dir " + dir + "\n",
			"StandardOutput=journal+console\n",
			"WantedBy=multi-user.target\n",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("unit for %s lacks %q:\n%s", dir, want, s)
			}
		}
		for _, line := range strings.Split(s, "\n") {
			if !strings.HasPrefix(line, "#") && strings.Contains(line, "network") {
				t.Errorf("unit for %s depends on the network: %q", dir, line)
			}
		}
		if strings.Contains(s, "{{") {
			t.Errorf("unit for %s has unrendered template actions:\n%s", dir, s)
		}
	}
}

func TestFirstbootUnitRejectsUnsafeMountPoint(t *testing.T) {
	for _, dir := range []string{"", "boot", "/", "/boot/../etc", "/boot fw", "/boot/%i", "/boot/"} {
		if _, err := FirstbootUnit(dir); err == nil {
			t.Errorf("FirstbootUnit(%q) succeeded, want error", dir)
		}
	}
}
