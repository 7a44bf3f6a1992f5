// Package progress shows a person in front of the Pi what the install is
// doing: lines on every console the kernel writes to (HDMI and serial, from
// /proc/consoles) and a pattern on the activity LED (/sys/class/leds).
// Both are best effort: a missing console or LED never stops the install.
package progress

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Pattern is what the activity LED shows.
type Pattern int

const (
	// Working: heartbeat (two quick blinks, pause), the install is running.
	Working Pattern = iota
	// WaitingForNetwork: slow blink, 1 s on, 1 s off.
	WaitingForNetwork
	// Failed: fast blink, 0.1 s on, 0.1 s off, until a person acts.
	Failed
	// Finished: steady on.
	Finished
)

func (p Pattern) String() string {
	switch p {
	case Working:
		return "working (heartbeat)"
	case WaitingForNetwork:
		return "waiting for network (slow blink 1 s on / 1 s off)"
	case Failed:
		return "failed (fast blink 0.1 s on / 0.1 s off)"
	case Finished:
		return "finished (steady on)"
	}
	return fmt.Sprintf("pattern(%d)", int(p))
}

// ledNames are the activity LED's names: ACT on current kernels, led0 on
// older ones.
var ledNames = []string{"ACT", "led0"}

// Display writes to the consoles and the LED under Root.
type Display struct {
	Root string
	// Consoles are device names ("tty1", "ttyS0"); nil means read them from
	// /proc/consoles on first use.
	Consoles []string
	// Warn receives problems with a console or the LED (for the install log);
	// each is reported once.
	Warn   func(msg string)
	warned map[string]bool
	loaded bool
}

// ReadConsoles lists the consoles in <root>/proc/consoles (first field of
// each line, e.g. "tty1", "ttyAMA0").
func ReadConsoles(root string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(root, "proc/consoles"))
	if err != nil {
		return nil, fmt.Errorf("consoles: %w", err)
	}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && !strings.Contains(f[0], "/") && f[0] != ".." {
			names = append(names, f[0])
		}
	}
	return names, nil
}

func (d *Display) warn(key, msg string) {
	if d.warned == nil {
		d.warned = map[string]bool{}
	}
	if d.warned[key] || d.Warn == nil {
		return
	}
	d.warned[key] = true
	d.Warn(msg)
}

// Say writes one line to every console, prefixed "nixpi: ".
func (d *Display) Say(line string) {
	if d.Consoles == nil && !d.loaded {
		d.loaded = true
		names, err := ReadConsoles(d.Root)
		if err != nil {
			d.warn("consoles", err.Error())
		}
		d.Consoles = names
	}
	msg := []byte("nixpi: " + strings.TrimRight(line, "\n") + "\r\n")
	for _, name := range d.Consoles {
		if err := writeConsole(filepath.Join(d.Root, "dev", name), msg); err != nil {
			d.warn("console "+name, fmt.Sprintf("console %s: %v", name, err))
		}
	}
}

// writeConsole opens an existing device without waiting (O_NONBLOCK: a serial
// line without carrier must not hang the install) and without making it the
// controlling terminal.
func writeConsole(path string, msg []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write(msg)
	return errors.Join(werr, f.Close())
}

// LED sets the activity LED's pattern.
func (d *Display) LED(p Pattern) {
	if err := d.setLED(p); err != nil {
		d.warn("led", err.Error())
	}
}

func (d *Display) setLED(p Pattern) error {
	dir := ""
	for _, name := range ledNames {
		candidate := filepath.Join(d.Root, "sys/class/leds", name)
		if _, err := os.Stat(filepath.Join(candidate, "trigger")); err == nil {
			dir = candidate
			break
		}
	}
	if dir == "" {
		return fmt.Errorf("led: no activity LED (looked for %s under /sys/class/leds)", strings.Join(ledNames, ", "))
	}
	write := func(name, value string) error {
		// sysfs attributes exist already; never create files there.
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return fmt.Errorf("led: %w", err)
		}
		_, werr := f.WriteString(value)
		if err := errors.Join(werr, f.Close()); err != nil {
			return fmt.Errorf("led: %s: %w", name, err)
		}
		return nil
	}
	switch p {
	case Working:
		return write("trigger", "heartbeat")
	case WaitingForNetwork, Failed:
		ms := "1000"
		if p == Failed {
			ms = "100"
		}
		// Writing "timer" makes the kernel create delay_on/delay_off.
		if err := write("trigger", "timer"); err != nil {
			return err
		}
		return errors.Join(write("delay_on", ms), write("delay_off", ms))
	case Finished:
		return write("trigger", "default-on")
	}
	return fmt.Errorf("led: unknown pattern %d", int(p))
}
