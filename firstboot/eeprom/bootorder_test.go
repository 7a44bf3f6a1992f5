package eeprom

import (
	"strings"
	"testing"
)

func TestReachesUSB(t *testing.T) {
	t.Parallel()
	for order, want := range map[string]string{
		"0xf41":  "",
		"0xf14":  "",
		"0x4":    "",
		"0xf51":  "", // the BCM2711's own USB controller
		"0xf461": "", // NVMe between SD and USB
		"0x4e1":  "mode 2 is e (stop)",
		"0x41e":  "mode 1 is e (stop)",
		"0x4f1":  "mode 2 is f (restart)",
		"0xf21":  "no USB mode",
		"0xf1":   "no USB mode",
		"0x9":    "not a Pi 4 boot mode",
		"f41":    "must start with 0x",
	} {
		err := ReachesUSB(order)
		switch {
		case want == "" && err != nil:
			t.Errorf("ReachesUSB(%s) = %v, want nil", order, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("ReachesUSB(%s) = %v, want an error with %q", order, err, want)
		}
	}
}

func TestSDBeforeUSB(t *testing.T) {
	t.Parallel()
	for order, want := range map[string]bool{
		"0xf41": true, "0xf14": false, "0x4": false, "0xf10": true,
		"0xf461": true, "0xf1e4": false, "0x41": true, "0xf4": false, "0xF21": true, "0xf241": true, "0xf412": true, "0xf142": false, "0xe1": true, "0xf40": true, "0xe4": false, "bad": false,
	} {
		if got := SDBeforeUSB(order); got != want {
			t.Errorf("SDBeforeUSB(%s) = %v, want %v", order, got, want)
		}
	}
}

// Duplicate keys: the bootloader applies the last assignment whose section
// matches, and which conditional sections match is not known beforehand,
// so every assignment outside [none]/[pi5] must reach USB.
func TestConfigReachesUSBDuplicateKeys(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		config string
		ok     bool
	}{
		"no BOOT_ORDER: the default 0xf41": {"[all]\nBOOT_UART=0\n", true},
		"one good":                         {"[all]\nBOOT_ORDER=0xf41\n", true},
		"a later one without USB wins":     {"[all]\nBOOT_ORDER=0xf41\nBOOT_ORDER=0xf1\n", false},
		"an earlier one without USB":       {"[all]\nBOOT_ORDER=0xf1\nBOOT_ORDER=0xf41\n", false},
		"a gpio filter may apply":          {"[all]\nBOOT_ORDER=0xf41\n[gpio8=0]\nBOOT_ORDER=0x1\n", false},
		"[none] never applies":             {"[all]\nBOOT_ORDER=0xf41\n[none]\nBOOT_ORDER=0x1\n", true},
		"[pi5] is not a Pi 4":              {"[pi5]\nBOOT_ORDER=0x1\n[all]\nBOOT_ORDER=0xf41\n", true},
		"stop before USB":                  {"[all]\nBOOT_ORDER=0x4e1\n", false},
	} {
		err := ConfigReachesUSB([]byte(tc.config))
		if (err == nil) != tc.ok {
			t.Errorf("%s: ConfigReachesUSB = %v, want ok=%v", name, err, tc.ok)
		}
	}
}

func TestSetBootOrderWritesExactlyOne(t *testing.T) {
	t.Parallel()
	in := "[all]\nBOOT_UART=0\nBOOT_ORDER=0xf1\nWAKE_ON_GPIO=1\n[gpio8=0]\nBOOT_ORDER=0x1\n"
	out, err := SetBootOrder([]byte(in), "0xf41")
	if err != nil {
		t.Fatal(err)
	}
	want := "[all]\nBOOT_UART=0\nBOOT_ORDER=0xf41\nWAKE_ON_GPIO=1\n[gpio8=0]\n"
	if string(out) != want {
		t.Fatalf("SetBootOrder =\n%s\nwant\n%s", out, want)
	}
	if !HasBootOrder(out, "0xf41") || len(BootOrders(out)) != 1 {
		t.Fatalf("after SetBootOrder: orders %v", BootOrders(out))
	}
	// Absent: added, and then it is there explicitly.
	if HasBootOrder([]byte("[all]\nBOOT_UART=0\n"), "0xf41") {
		t.Fatal("HasBootOrder of a config without BOOT_ORDER: the update must write it explicitly")
	}
	out, err = SetBootOrder([]byte("[all]\nBOOT_UART=0\n"), "0xf41")
	if err != nil || string(out) != "[all]\nBOOT_UART=0\nBOOT_ORDER=0xf41\n" {
		t.Fatalf("SetBootOrder of a config without one = %q, %v", out, err)
	}
}
