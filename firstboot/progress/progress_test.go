package progress

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestSayWritesEveryConsole(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	// As on a Pi 4 with HDMI and serial; ttyAMA0 has no device node here.
	write(t, filepath.Join(root, "proc/consoles"), "ttyS0                -W- (E  p a)    4:64\ntty1                 -WU (EC p  )    4:1\nttyAMA0              -W- (E  p a)  204:64\n")
	write(t, filepath.Join(root, "dev/ttyS0"), "")
	write(t, filepath.Join(root, "dev/tty1"), "")
	var warnings []string
	d := &Display{Root: root, Warn: func(m string) { warnings = append(warnings, m) }}
	d.Say("step 1 of 7, preflight")
	d.Say("step 2 of 7, arm64")
	want := "nixpi: step 1 of 7, preflight\r\nnixpi: step 2 of 7, arm64\r\n"
	for _, c := range []string{"ttyS0", "tty1"} {
		if got := read(t, filepath.Join(root, "dev", c)); got != want {
			t.Errorf("%s got %q, want %q", c, got, want)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "ttyAMA0") {
		t.Errorf("warnings = %q, want one about ttyAMA0", warnings)
	}
	if _, err := os.Stat(filepath.Join(root, "dev/ttyAMA0")); err == nil {
		t.Error("Say created a device node")
	}
}

func TestReadConsoles(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write(t, filepath.Join(root, "proc/consoles"), "tty1 -WU (EC p  ) 4:1\n\nttyAMA0 -W- (E p a) 204:64\n")
	got, err := ReadConsoles(root)
	if err != nil || strings.Join(got, ",") != "tty1,ttyAMA0" {
		t.Fatalf("ReadConsoles = %q, %v", got, err)
	}
	if _, err := ReadConsoles(t.TempDir()); err == nil {
		t.Error("ReadConsoles without /proc/consoles: no error")
	}
}

func TestLEDPatterns(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"ACT", "led0"} {
		root := t.TempDir()
		led := filepath.Join(root, "sys/class/leds", name)
		for _, f := range []string{"trigger", "delay_on", "delay_off", "brightness"} {
			write(t, filepath.Join(led, f), "")
		}
		var warnings []string
		d := &Display{Root: root, Warn: func(m string) { warnings = append(warnings, m) }}
		cases := []struct {
			p                Pattern
			trigger, on, off string
		}{
			{Working, "heartbeat", "", ""},
			{WaitingForNetwork, "timer", "1000", "1000"},
			{Failed, "timer", "100", "100"},
			{Finished, "default-on", "100", "100"}, // delay files untouched
		}
		for _, c := range cases {
			d.LED(c.p)
			if got := read(t, filepath.Join(led, "trigger")); got != c.trigger {
				t.Errorf("%s %v: trigger %q, want %q", name, c.p, got, c.trigger)
			}
			if c.on != "" {
				if on, off := read(t, filepath.Join(led, "delay_on")), read(t, filepath.Join(led, "delay_off")); on != c.on || off != c.off {
					t.Errorf("%s %v: delay %s/%s, want %s/%s", name, c.p, on, off, c.on, c.off)
				}
			}
		}
		if len(warnings) != 0 {
			t.Errorf("warnings: %q", warnings)
		}
	}
}

func TestNoLEDWarnsOnce(t *testing.T) {
	t.Parallel()
	var warnings []string
	d := &Display{Root: t.TempDir(), Warn: func(m string) { warnings = append(warnings, m) }}
	d.LED(Working)
	d.LED(Failed)
	if len(warnings) != 1 || !strings.Contains(warnings[0], "no activity LED") {
		t.Errorf("warnings = %q", warnings)
	}
}
