package steps

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nixpi/nixpi/firstboot/engine"
)

// TestMachineSerial reads the Pi's serial number under the injected root:
// the device tree's first, /proc/cpuinfo's Serial line otherwise.
func TestMachineSerial(t *testing.T) {
	t.Parallel()
	put := func(t *testing.T, root, path, data string) {
		t.Helper()
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cpuinfo := "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 10000000abcdef01\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n"
	for _, tc := range []struct {
		name, cpuinfo, dt, want string
	}{
		{"nothing (not a Pi)", "processor\t: 0\n", "", ""},
		{"cpuinfo", cpuinfo, "", "10000000abcdef01"},
		{"device tree first", cpuinfo, "6f1b2c3d4e5f6071\x00", "6f1b2c3d4e5f6071"},
	} {
		root := t.TempDir()
		put(t, root, "/proc/cpuinfo", tc.cpuinfo)
		if tc.dt != "" {
			put(t, root, "/sys/firmware/devicetree/base/serial-number", tc.dt)
		}
		if got := machineSerial(&engine.Env{Root: root}); got != tc.want {
			t.Errorf("%s: serial %q, want %q", tc.name, got, tc.want)
		}
	}
}
