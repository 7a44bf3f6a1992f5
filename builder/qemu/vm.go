package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nixpi/nixpi/firstboot/system"
)

// VM is an emulated Raspberry Pi 4 with its SD card and a USB SSD. The
// virt machine has no Pi firmware: Pi.PowerOn plays it and gives Boot the
// kernel, initramfs and command line to start.
type VM struct {
	Card string // card image (raw)
	SSD  string // USB disk image (raw)
	// SSDSerial is the USB serial number; it makes the disk's
	// /dev/disk/by-id name and identity stable across boots and scenarios.
	SSDSerial string
	// Bystanders are more USB disks, which the service must leave alone.
	Bystanders []USBDisk
	MemoryMiB  int
	CPUs       int
	// GuestForward, when set, gives the machine a network card on QEMU's
	// user network restricted to this one guestfwd rule (GuestForward
	// makes it): the guest gets an address by DHCP and reaches the host's
	// server and nothing else. Unset: no network at all.
	GuestForward string
	// EEPROM, when set, is the bootloader's state the guest can read (the
	// stand-in vcgencmd): QEMU's fw_cfg carries its config and version
	// text as opt/nixpi/bootloader_config and opt/nixpi/bootloader_version.
	EEPROM *EEPROM
	// Dir receives the console log of each boot (console-N.log) and the
	// kernel files taken for it.
	Dir   string
	Run   system.Runner
	Tools Tools
	Log   func(format string, args ...any)
}

// USBDisk is a disk image attached to the machine's USB controller.
type USBDisk struct {
	Path   string // raw image
	Serial string
}

// Action is what a watcher wants done with the running machine.
type Action int

const (
	Continue Action = iota
	// PowerCut kills QEMU at once: the guest gets no chance to flush.
	PowerCut
	// PowerOff asks the guest to shut down cleanly (the power button).
	PowerOff
)

// Watcher sees every console line as it arrives, and is asked every poll
// interval (line == "" then) so it can act on the card's journal.
type Watcher func(line string) Action

// End is how a boot ended.
type End string

const (
	EndReboot   End = "reboot"    // the guest rebooted (-no-reboot turns that into an exit)
	EndPowerOff End = "power off" // the guest powered off
	EndCut      End = "power cut" // killed on a watcher's request
	EndTimeout  End = "timeout"   // killed after the boot's time limit
	// EndNoBoot: the firmware or U-Boot found nothing to boot, so QEMU never
	// ran (BootResult.Reason says why).
	EndNoBoot End = "no boot"
)

// BootResult describes one boot.
type BootResult struct {
	N        int
	End      End
	Console  string // path of the captured serial console ("" for EndNoBoot)
	Duration time.Duration
	// Source is where the firmware booted from, Via what it loaded.
	Source BootSource
	Via    string
	// Reason says why nothing booted (EndNoBoot); Notes what the firmware
	// and U-Boot reported on the way.
	Reason string
	Notes  []string
	// RebootCommand is the argument the guest rebooted with, as the kernel
	// printed it ("Restarting system with command '0 tryboot'").
	RebootCommand string
	// MultiUser: the stand-in NixOS reached multi-user.target in this boot.
	MultiUser bool
}

func (v *VM) logf(format string, args ...any) {
	if v.Log != nil {
		v.Log(format, args...)
	}
}

// Argv is the qemu-system-aarch64 command line for one boot; fwCfg are
// -fw_cfg values.
func (v *VM) Argv(kernel, initrd, cmdline, qmpSocket string, fwCfg ...string) []string {
	argv := []string{v.Tools.QemuSystem,
		"-M", "virt", "-cpu", "cortex-a72",
		"-smp", strconv.Itoa(v.CPUs), "-m", strconv.Itoa(v.MemoryMiB),
		"-no-reboot", "-nographic", "-serial", "stdio", "-monitor", "none",
		"-qmp", "unix:" + qmpSocket + ",server=on,wait=off",
		"-kernel", kernel,
	}
	if initrd != "" {
		argv = append(argv, "-initrd", initrd)
	}
	argv = append(argv, "-append", cmdline,
		"-drive", "if=none,id=card,format=raw,file="+v.Card,
		"-device", "virtio-blk-pci,drive=card",
		"-drive", "if=none,id=ssd,format=raw,file="+v.SSD,
		"-device", "qemu-xhci,id=xhci",
		"-device", "usb-storage,bus=xhci.0,drive=ssd,serial="+v.SSDSerial,
	)
	for _, f := range fwCfg {
		argv = append(argv, "-fw_cfg", f)
	}
	for i, d := range v.Bystanders {
		id := fmt.Sprintf("usb%d", i+1)
		argv = append(argv,
			"-drive", "if=none,id="+id+",format=raw,file="+d.Path,
			"-device", "usb-storage,bus=xhci.0,drive="+id+",serial="+d.Serial)
	}
	if v.GuestForward == "" {
		// No network: nothing may leave this machine.
		return append(argv, "-nic", "none")
	}
	// restrict=on: nothing leaves this machine except through the
	// guestfwd rule (QEMU's option syntax doubles a literal comma).
	return append(argv,
		"-netdev", "user,id=net0,restrict=on,guestfwd="+strings.ReplaceAll(v.GuestForward, ",", ",,"),
		"-device", "virtio-net-pci,netdev=net0",
	)
}

// powerButtonGrace is how long a clean shutdown may take after the power
// button before the power is cut.
const powerButtonGrace = 60 * time.Second

// rebootCommand is the kernel's last line when the guest reboots with an
// argument (kernel/reboot.c): `systemctl reboot --reboot-argument='0 tryboot'`
// prints "reboot: Restarting system with command '0 tryboot'".
var rebootCommand = regexp.MustCompile(`reboot: Restarting system with command '([^']*)'`)

// Boot powers the machine on once with what plan says to start and runs it
// until the guest reboots or powers off, the watcher cuts the power, or
// timeout passes. The plan's kernel files are removed afterwards.
func (v *VM) Boot(ctx context.Context, n int, plan *BootPlan, timeout time.Duration, watch Watcher) (*BootResult, error) {
	start := time.Now()
	defer os.Remove(plan.Kernel)
	if plan.Initrd != "" {
		defer os.Remove(plan.Initrd)
	}
	fwCfg, err := v.fwCfg()
	if err != nil {
		return nil, fmt.Errorf("boot %d: %w", n, err)
	}
	res := &BootResult{N: n, Console: filepath.Join(v.Dir, fmt.Sprintf("console-%d.log", n)), Source: plan.Source, Via: plan.Via, Notes: plan.Notes}
	logFile, err := os.Create(res.Console)
	if err != nil {
		return nil, fmt.Errorf("boot %d: %w", n, err)
	}
	defer logFile.Close()
	qmp := filepath.Join(v.Dir, "qmp.sock")
	os.Remove(qmp)

	argv := v.Argv(plan.Kernel, plan.Initrd, plan.Cmdline, qmp, fwCfg...)
	v.logf("boot %d: %s", n, system.QuoteArgv(argv))
	cmd := exec.Command(argv[0], argv[1:]...)
	// A harness that dies must not leave a machine running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("boot %d: start %s: %w", n, argv[0], err)
	}
	lines := make(chan string, 256)
	var tail tailBuffer
	go func() {
		sc := bufio.NewScanner(io.TeeReader(stdout, logFile))
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		sc.Split(scanConsoleLines)
		for sc.Scan() {
			line := StripANSI(strings.TrimRight(sc.Text(), "\r"))
			tail.add(line)
			lines <- line
		}
		close(lines)
	}()

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	kill := func() {
		if cmd.Process != nil {
			cmd.Process.Kill()
		}
	}
	var poweroffSent time.Time
	act := func(a Action) {
		switch {
		case a == PowerCut && res.End == "":
			res.End = EndCut
			kill()
		case a == PowerOff && poweroffSent.IsZero() && res.End == "":
			poweroffSent = time.Now()
			if err := qmpCommand(qmp, "system_powerdown"); err != nil {
				v.logf("boot %d: power button: %v; cutting the power instead", n, err)
				res.End = EndCut
				kill()
			}
		}
	}
	ctxDone := ctx.Done()
	var exitErr error
	for exited := false; !exited; {
		select {
		case line, ok := <-lines:
			if !ok {
				// QEMU closed its output: it has exited.
				exitErr = cmd.Wait()
				exited = true
				break
			}
			if m := rebootCommand.FindStringSubmatch(line); m != nil {
				res.RebootCommand = m[1]
			}
			if watch != nil {
				act(watch(line))
			}
		case <-poll.C:
			if watch != nil {
				act(watch(""))
			}
			if !poweroffSent.IsZero() && time.Since(poweroffSent) > powerButtonGrace && res.End == "" {
				v.logf("boot %d: no shutdown %s after the power button; cutting the power", n, powerButtonGrace)
				res.End = EndCut
				kill()
			}
		case <-deadline.C:
			if res.End == "" {
				res.End = EndTimeout
			}
			kill()
		case <-ctxDone:
			kill()
			ctxDone = nil
		}
	}
	res.Duration = time.Since(start)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if res.End == "" {
		if exitErr != nil {
			return res, fmt.Errorf("boot %d: %s exited: %v; console %s ends:\n%s", n, argv[0], exitErr, res.Console, tail.String())
		}
		res.End = EndReboot
		if tail.contains("reboot: Power down") {
			res.End = EndPowerOff
		}
	}
	v.logf("boot %d (%s): %s after %s (console: %s)", n, res.Source, res.End, res.Duration.Round(100*time.Millisecond), res.Console)
	if res.End == EndTimeout {
		return res, fmt.Errorf("boot %d: no reboot or power-off within %s; console %s ends:\n%s", n, timeout, res.Console, tail.String())
	}
	return res, nil
}

// fwCfg writes the EEPROM's state where QEMU's fw_cfg reads it, fresh for
// every boot (the boot ROM may have flashed an update).
func (v *VM) fwCfg() ([]string, error) {
	if v.EEPROM == nil {
		return nil, nil
	}
	var args []string
	for _, f := range []struct {
		name string
		data []byte
	}{{"bootloader_config", v.EEPROM.Config}, {"bootloader_version", []byte(v.EEPROM.VersionText())}} {
		p := filepath.Join(v.Dir, "eeprom-"+f.name)
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return nil, err
		}
		args = append(args, "name="+FwCfgPrefix+f.name+",file="+p)
	}
	return args, nil
}

// FwCfgPrefix is where the guest finds the EEPROM's state under
// /sys/firmware/qemu_fw_cfg/by_name/ (module qemu_fw_cfg).
const FwCfgPrefix = "opt/nixpi/"

var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// StripANSI removes the colour codes systemd puts on the console.
func StripANSI(s string) string { return ansiEscape.ReplaceAllString(s, "") }

// tailBuffer keeps the last console lines for error messages.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > 30 {
		t.lines = t.lines[len(t.lines)-30:]
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

func (t *tailBuffer) contains(s string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// qmpCommand sends one command over QEMU's machine protocol socket.
func qmpCommand(socket, command string) error {
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return fmt.Errorf("qmp: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	dec := json.NewDecoder(conn)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		return fmt.Errorf("qmp greeting: %w", err)
	}
	for _, c := range []string{"qmp_capabilities", command} {
		if _, err := fmt.Fprintf(conn, "{\"execute\":%q}\n", c); err != nil {
			return fmt.Errorf("qmp %s: %w", c, err)
		}
		for {
			var reply map[string]any
			if err := dec.Decode(&reply); err != nil {
				return fmt.Errorf("qmp %s: %w", c, err)
			}
			if e, ok := reply["error"]; ok {
				return fmt.Errorf("qmp %s: %v", c, e)
			}
			if _, ok := reply["return"]; ok {
				break
			}
			// An asynchronous event; the reply comes after it.
		}
	}
	return nil
}

// loginPrompt ends the console's output when getty waits for a name: no
// newline follows it, so a line scanner alone would never pass it on.
var loginPrompt = []byte(" login: ")

// scanConsoleLines splits the console into lines, and also hands over a
// pending login prompt as a line of its own.
func scanConsoleLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return bufio.ScanLines(data, atEOF)
	}
	if bytes.HasSuffix(data, loginPrompt) {
		return len(data), data, nil
	}
	return bufio.ScanLines(data, atEOF)
}
