package steps

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/progress"
)

type doneStep struct{}

// NewDone ends the install: the card's service disables itself (a card
// brought back with nixpi restore-card boots plain Raspberry Pi OS), the
// consoles say how to reach the installed system, and the LED goes
// steady. On NixOS it records the end; the confirm unit stops itself.
func NewDone() engine.Step { return doneStep{} }

func (doneStep) Name() string    { return "done" }
func (doneStep) Needs() []string { return []string{"retire"} }
func (doneStep) Describe() string {
	return "finishing: the service disables itself and says how to reach NixOS"
}

// AfterHandOver: done still runs on a card that boots after the hand-over
// (restored with nixpi restore-card), to say so and disable the service.
func (doneStep) AfterHandOver() {}

func (doneStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	ho := env.State.HandOver
	switch {
	case ho == nil || !ho.Finished:
		return false, "the hand-over is ready", nil
	case !env.OnNixOS && env.Exists(cardpath.UnitWantedBy):
		return false, "the install finished, yet the card booted its Raspberry Pi OS again (restored with nixpi restore-card?) with the service enabled", nil
	}
	return true, "the install finished in an earlier boot", nil
}

func (doneStep) Run(ctx context.Context, env *engine.Env) error {
	ho := handOver(env)
	if ho.Finished && !env.OnNixOS {
		return restoredCard(ctx, env, ho)
	}
	if env.Config != nil {
		if ho.Hostname == "" {
			ho.Hostname = env.Config.System.Hostname
		}
		if len(ho.Logins) == 0 {
			ho.Logins = logins(env.Config)
		}
	}
	if ho.BootOrder == "" {
		ho.BootOrder = wantedOrder(env).Value
	}
	if ho.Retired == "" && !eeprom.SDBeforeUSB(ho.BootOrder) {
		ho.Retired = fmt.Sprintf("not retired: BOOT_ORDER %s tries USB first, the card is the fallback", ho.BootOrder)
	}
	if env.OnNixOS {
		// The card's Raspberry Pi OS is not running: its service is not
		// enabled on this system, and a restored card is recognised by
		// the journal (Finished).
		if c := ho.Confirmed; c != nil && len(c.Addresses) > 0 {
			ho.Address = c.Addresses[0]
		}
	} else {
		ho.Address = address(ctx, env)
		if _, err := env.Run.Output(ctx, env.Tools.Systemctl, "disable", cardpath.UnitName); err != nil {
			return engine.WithHint(fmt.Errorf("disable the service: %w", err), "the install itself is complete; power the Pi off and on to boot the SSD")
		}
	}
	ho.Finished = true
	for _, line := range ho.Message() {
		env.Logf("%s", line)
	}
	env.SetLED(progress.Finished)
	return nil
}

// restoredCard is a card that boots after the hand-over finished: it is
// never retired again; the service says where NixOS is and disables
// itself.
func restoredCard(ctx context.Context, env *engine.Env, ho *journal.HandOver) error {
	env.Logf("the install finished: %s", ho.ConfirmLine())
	env.Logf("this card boots Raspberry Pi OS again (restored with nixpi restore-card); nixpi does not retire it again. " +
		"To boot NixOS from the SSD, power the Pi off, take the card out and power it on.")
	if _, err := env.Run.Output(ctx, env.Tools.Systemctl, "disable", cardpath.UnitName); err != nil {
		return fmt.Errorf("disable the service: %w", err)
	}
	env.SetLED(progress.Finished)
	return nil
}

// address is the first global address the Pi has (IPv4 before IPv6), ""
// when it cannot be read: it is for a person, not worth failing over.
func address(ctx context.Context, env *engine.Env) string {
	out, err := env.Run.Output(ctx, env.Tools.IP, "-o", "addr", "show", "scope", "global")
	if err != nil {
		env.Logf("cannot read the Pi's address: %v", err)
		return ""
	}
	var v6 string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			addr, _, _ := strings.Cut(f[i+1], "/")
			if ip := net.ParseIP(addr); ip == nil || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
				continue
			}
			switch {
			case f[i] == "inet":
				return addr
			case f[i] == "inet6" && v6 == "":
				v6 = addr
			}
		}
	}
	return v6
}

type rebootStep struct{}

// NewReboot flushes the card and reboots into the SSD when the card
// finished the hand-over itself (NixOS confirmed, then a power cut before
// it had retired the card); on NixOS there is nothing to reboot.
func NewReboot() engine.Step { return rebootStep{} }

func (rebootStep) Name() string    { return "reboot" }
func (rebootStep) Needs() []string { return []string{"done"} }
func (rebootStep) Describe() string {
	return "rebooting into NixOS on the SSD"
}

// Probe is done on NixOS, and once the reboot was asked for: if this
// service runs again, the card booted after all (a USB-first order falling
// back to it, or a card restored by hand), and there is nothing left to do.
func (rebootStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	if env.OnNixOS {
		return true, "NixOS runs from the SSD: nothing to reboot", nil
	}
	if ho := env.State.HandOver; ho != nil && ho.Rebooted {
		return true, "the Pi was rebooted into the SSD in an earlier boot", nil
	}
	return false, "the install is done", nil
}

func (rebootStep) Run(ctx context.Context, env *engine.Env) error {
	// Everything on the card is fsynced as it is written; this also flushes
	// what the system wrote elsewhere before systemd unmounts and reboots.
	syscall.Sync()
	handOver(env).Rebooted = true
	env.RequestReboot("boot NixOS from the SSD")
	return nil
}
