package system

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"
)

// SystemdMachine is the real Machine: it asks systemd to reboot.
type SystemdMachine struct {
	Run       Runner
	Systemctl string
}

// Sync implements Machine with sync(2): Nix, mkfs and the steps' own files
// are written through the page cache, and ext4's delayed allocation leaves
// a file empty after a power cut until its data is flushed.
func (SystemdMachine) Sync(context.Context) error {
	unix.Sync()
	return nil
}

// Reboot implements Machine with "systemctl --no-block reboot", which queues
// the reboot and returns, so the caller can finish writing and exit. Without
// --no-block systemctl may wait for the shutdown it started, which stops this
// service first: the reboot would look like a failure.
func (m SystemdMachine) Reboot(ctx context.Context) error {
	if _, err := m.Run.Output(ctx, m.Systemctl, "--no-block", "reboot"); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	return nil
}

// TrybootArgument is the reboot argument the raspberrypi firmware driver
// passes to the bootloader as the tryboot flag; the partition number is
// required once an argument follows it.
const TrybootArgument = "0 tryboot"

// TryReboot implements Machine with systemctl's --reboot-argument, which
// reaches the kernel's reboot(2) (LINUX_REBOOT_CMD_RESTART2) and so the
// firmware driver's SET_REBOOT_FLAGS.
func (m SystemdMachine) TryReboot(ctx context.Context) error {
	if _, err := m.Run.Output(ctx, m.Systemctl, "--no-block", "--reboot-argument="+TrybootArgument, "reboot"); err != nil {
		return fmt.Errorf("reboot with the tryboot flag: %w", err)
	}
	return nil
}
