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
