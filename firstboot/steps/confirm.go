package steps

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
)

type confirmStep struct{}

// NewConfirm is the installed NixOS's word, from the SSD, that it booted:
// the time, the running system and its generation, and its addresses go
// into the card's journal, and the trial's files come off the card. It
// runs only on NixOS (nixpi-firstboot confirm, from the confirm unit the
// generated configuration declares); the card's retirement waits for it.
func NewConfirm() engine.Step { return confirmStep{} }

func (confirmStep) Name() string    { return "confirm" }
func (confirmStep) Needs() []string { return []string{"trial"} }
func (confirmStep) Describe() string {
	return "NixOS confirms that it booted from the SSD"
}

func (confirmStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	if c := handOver(env).Confirmed; c != nil {
		return true, fmt.Sprintf("NixOS confirmed in boot %d", c.Boot), nil
	}
	if !env.OnNixOS {
		return false, "", errors.New("confirm: no confirmation from NixOS on the SSD, and only NixOS can give it")
	}
	return false, "NixOS is running from the SSD", nil
}

// addressWait bounds the wait for NixOS's first address: DHCP may take a
// while, and the confirmation must not wait forever for a network that
// may never come (a Pi without a cable or Wi-Fi).
const addressWait = 45 * time.Second

func (confirmStep) Run(ctx context.Context, env *engine.Env) error {
	if !env.OnNixOS {
		return errors.New("confirm: runs on NixOS from the SSD (nixpi-firstboot confirm)")
	}
	system, err := os.Readlink(env.Path("/run/current-system"))
	if err != nil {
		return fmt.Errorf("confirm: the running system: %w", err)
	}
	c := &journal.Confirmation{
		Time: env.Clock().UTC(), Boot: env.Boot, System: system,
		Generation: profileGeneration(env), BootedAt: bootTime(env),
	}
	if want := env.State.SystemPath; want != "" && want != system {
		env.Logf("warning: NixOS runs %s, not the installed %s (was it rebuilt since?)", system, want)
	}
	c.Addresses = waitAddresses(ctx, env)
	ho := handOver(env)
	ho.Confirmed = c
	if err := removeTrialFiles(env.Path(env.BootDir)); err != nil {
		return fmt.Errorf("confirm: remove the trial files from the card: %w", err)
	}
	env.Logf("%s", ho.ConfirmLine())
	return nil
}

// profileGeneration is N of the system profile's system-N-link, 0 when it
// cannot be read.
func profileGeneration(env *engine.Env) int {
	link, err := os.Readlink(env.Path(systemProfile))
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(link), "system-"), "-link"))
	if err != nil {
		return 0
	}
	return n
}

// bootTime is the kernel's boot time from /proc/stat's btime line.
func bootTime(env *engine.Env) time.Time {
	data, err := os.ReadFile(env.Path("/proc/stat"))
	if err != nil {
		return time.Time{}
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(s, 0).UTC()
			}
		}
	}
	return time.Time{}
}

// waitAddresses returns NixOS's global addresses, waiting for the first
// one for at most addressWait.
func waitAddresses(ctx context.Context, env *engine.Env) []string {
	read := env.Addresses
	if read == nil {
		read = interfaceAddresses
	}
	deadline := env.Clock().Add(addressWait)
	for {
		addrs, err := read()
		if err != nil {
			env.Logf("cannot read the addresses: %v", err)
			return nil
		}
		if len(addrs) > 0 || !env.Clock().Before(deadline) {
			return addrs
		}
		if env.Wait(ctx, 3*time.Second) != nil {
			return nil
		}
	}
}

// interfaceAddresses lists the machine's global unicast addresses, IPv4
// first: through the kernel, so the same on Raspberry Pi OS and NixOS.
func interfaceAddresses() ([]string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var v4, v6 []string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			v4 = append(v4, n.IP.String())
		} else {
			v6 = append(v6, n.IP.String())
		}
	}
	return append(v4, v6...), nil
}
