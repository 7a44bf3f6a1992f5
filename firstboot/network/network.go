// Package network is for the steps that need the network, and only when
// they really do: Wait checks for a default route and a name server,
// bringing up Wi-Fi from the config's [wlan] through the image's own stack
// when there is no wired link, bounded and reported; Download fetches a file
// with retries and backoff.
package network

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/progress"
)

// PollInterval is how often Wait looks at the routing table.
const PollInterval = 2 * time.Second

// Status is what Check found.
type Status struct {
	DefaultRoute string // interface of the default route, "" when none
	NameServer   bool   // /etc/resolv.conf lists a name server
}

// Up reports whether there is a default route and a name server.
func (s Status) Up() bool { return s.DefaultRoute != "" && s.NameServer }

func (s Status) String() string {
	switch {
	case s.Up():
		return "default route via " + s.DefaultRoute
	case s.DefaultRoute == "":
		return "no default route"
	default:
		return "default route via " + s.DefaultRoute + " but no name server in /etc/resolv.conf"
	}
}

// Check reads /proc/net/route, /proc/net/ipv6_route and /etc/resolv.conf
// under the root. It changes nothing.
func Check(env *engine.Env) Status {
	var st Status
	st.DefaultRoute = defaultRoute4(env.Path("/proc/net/route"))
	if st.DefaultRoute == "" {
		st.DefaultRoute = defaultRoute6(env.Path("/proc/net/ipv6_route"))
	}
	if data, err := os.ReadFile(env.Path("/etc/resolv.conf")); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" {
				st.NameServer = true
			}
		}
	}
	return st
}

// defaultRoute4 finds "Iface 00000000 gateway flags..." with RTF_UP.
func defaultRoute4(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[0] == "Iface" {
			continue
		}
		var flags uint64
		fmt.Sscanf(f[3], "%x", &flags)
		if f[1] == "00000000" && f[7] == "00000000" && flags&0x1 != 0 {
			return f[0]
		}
	}
	return ""
}

// defaultRoute6 finds ::/0 with a gateway in /proc/net/ipv6_route.
func defaultRoute6(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	zero := strings.Repeat("0", 32)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[0] != zero || f[1] != "00" || f[4] == zero || f[9] == "lo" {
			continue
		}
		return f[9]
	}
	return ""
}

// WiredLink returns a wired interface with carrier, or "".
func WiredLink(env *engine.Env) string {
	dir := env.Path("/sys/class/net")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		name := e.Name()
		if name == "lo" || strings.HasPrefix(name, "wl") {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name, "wireless")); err == nil {
			continue
		}
		carrier, err := os.ReadFile(filepath.Join(dir, name, "carrier"))
		if err == nil && strings.TrimSpace(string(carrier)) == "1" {
			return name
		}
	}
	return ""
}

// Wait returns once the network is up, or fails after timeout with a hint.
// When there is no wired link and the config has [wlan], it brings Wi-Fi up
// once. The LED shows the waiting pattern meanwhile.
func Wait(ctx context.Context, env *engine.Env, timeout time.Duration) error {
	st := Check(env)
	if st.Up() {
		env.Logf("network is up (%s)", st)
		return nil
	}
	env.SetLED(progress.WaitingForNetwork)
	defer env.SetLED(progress.Working)
	env.Logf("waiting up to %s for the network (%s)", timeout, st)

	var wifiErr error
	if wired := WiredLink(env); wired != "" {
		env.Logf("wired link on %s, waiting for an address", wired)
	} else if env.Config != nil && env.Config.WLAN != nil && env.Config.WLAN.SSID != "" {
		if wifiErr = StartWiFi(ctx, env); wifiErr != nil {
			env.Logf("wi-fi: %v", wifiErr)
		}
	}
	deadline := env.Clock().Add(timeout)
	for {
		if st = Check(env); st.Up() {
			env.Logf("network is up (%s)", st)
			return nil
		}
		if !env.Clock().Before(deadline) {
			break
		}
		if err := env.Wait(ctx, PollInterval); err != nil {
			return fmt.Errorf("waiting for the network: %w", err)
		}
	}
	err := fmt.Errorf("no network after %s: %s", timeout, st)
	if wifiErr != nil {
		err = fmt.Errorf("%w; wi-fi: %w", err, wifiErr)
	}
	hint := "plug an Ethernet cable into the Pi, or set [wlan] ssid, psk and country in nixpi/nixpi.toml on the card"
	if env.Config != nil && env.Config.WLAN != nil {
		hint = "check [wlan] ssid, psk and country in nixpi/nixpi.toml on the card, or plug an Ethernet cable into the Pi"
	}
	return engine.WithHint(err, hint)
}
