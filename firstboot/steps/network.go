package steps

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/network"
	"github.com/nixpi/nixpi/firstboot/progress"
)

// NixNetworkTimeout bounds the network step's wait for a link, the clock
// and the binary cache together.
const NixNetworkTimeout = 10 * time.Minute

// networkPoll is how often the clock and the cache are looked at again.
const networkPoll = 5 * time.Second

// networkStep waits, bounded, for what the Nix steps need from outside: a
// link (network.Wait, which brings Wi-Fi up from [wlan]), a clock that TLS
// can trust (the Pi has no RTC), and the first substituter answering.
type networkStep struct {
	client  *http.Client
	timeout time.Duration
}

// NewNetwork returns the step that waits for link, clock and binary cache.
func NewNetwork() engine.Step {
	return networkStep{client: &http.Client{Timeout: 30 * time.Second}, timeout: NixNetworkTimeout}
}

func (networkStep) Name() string    { return "network" }
func (networkStep) Needs() []string { return nil }
func (networkStep) Describe() string {
	return "waiting for the network, a set clock and the binary cache"
}

// netMissing is what is not there yet: "" when all is.
type netMissing struct {
	what string // "link", "clock", "binary cache"
	why  string
	hint string
}

func (networkStep) clock(ctx context.Context, env *engine.Env) *netMissing {
	now := env.Clock()
	built := cardBuildTime(env)
	if !built.IsZero() && now.After(built) {
		return nil
	}
	if env.Exists(env.Tools.Timedatectl) {
		out, err := env.Run.Output(ctx, env.Tools.Timedatectl, "show", "--property=NTPSynchronized", "--value")
		if err == nil && strings.TrimSpace(string(out)) == "yes" {
			return nil
		}
	}
	why := fmt.Sprintf("the clock says %s and NTP has not synchronised it", now.UTC().Format(time.RFC3339))
	if !built.IsZero() {
		why = fmt.Sprintf("the clock says %s, before this card was written (%s), and NTP has not synchronised it",
			now.UTC().Format(time.RFC3339), built.UTC().Format(time.RFC3339))
	}
	return &netMissing{"clock", why, "the Pi has no battery clock: let NTP (UDP port 123) through the router or firewall, and check that systemd-timesyncd runs (timedatectl status)"}
}

// cardBuildTime is the manifest's SOURCE_DATE_EPOCH (zero when unknown):
// no honest clock is earlier than the card.
func cardBuildTime(env *engine.Env) time.Time {
	data, err := os.ReadFile(env.Path(filepath.Join(env.BootDir, cardpath.Manifest)))
	if err != nil {
		return time.Time{}
	}
	var m struct {
		Epoch int64 `json:"source_date_epoch"`
	}
	if json.Unmarshal(data, &m) != nil || m.Epoch <= 0 {
		return time.Time{}
	}
	return time.Unix(m.Epoch, 0)
}

// cache asks the first substituter for /nix-cache-info, as Nix does before
// it uses a cache. Schemes other than HTTP(S) are Nix's to reach.
func (s networkStep) cache(ctx context.Context, env *engine.Env) *netMissing {
	subs := env.Config.NixOS.Substituters
	if len(subs) == 0 {
		return nil
	}
	u, err := url.Parse(subs[0])
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return nil
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/nix-cache-info"
	info := u.String()
	hint := fmt.Sprintf("check that the Pi can reach %s (DNS, proxy, firewall) and that nixos.substituters in nixpi/nixpi.toml is right", u.Host)
	err = getCacheInfo(ctx, s.client, info)
	if err == nil {
		return nil
	}
	return &netMissing{"binary cache", fmt.Sprintf("GET %s: %v", u.Redacted(), err), hint}
}

func getCacheInfo(ctx context.Context, client *http.Client, info string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, info, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the server answered %s", resp.Status)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<10))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "StoreDir:") {
			return nil
		}
	}
	return errors.New("the answer has no StoreDir: line, so it is not a Nix binary cache")
}

// missing looks once at link, clock and cache, in that order; what comes
// after a missing link cannot be seen.
func (s networkStep) missing(ctx context.Context, env *engine.Env) *netMissing {
	if st := network.Check(env); !st.Up() {
		return &netMissing{"link", st.String(), "check the Ethernet cable, or [wlan] ssid, psk and country in nixpi/nixpi.toml on the card"}
	}
	if m := s.clock(ctx, env); m != nil {
		return m
	}
	return s.cache(ctx, env)
}

func (s networkStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	if m := s.missing(ctx, env); m != nil {
		return false, fmt.Sprintf("%s: %s", m.what, m.why), nil
	}
	return true, "network up, clock set, binary cache answers", nil
}

func (s networkStep) Run(ctx context.Context, env *engine.Env) error {
	deadline := env.Clock().Add(s.timeout)
	if err := network.Wait(ctx, env, s.timeout); err != nil {
		return fmt.Errorf("network: link missing: %w (clock and binary cache not checked)", err)
	}
	env.SetLED(progress.WaitingForNetwork)
	defer env.SetLED(progress.Working)
	var last string
	var shown time.Time
	for {
		m := s.missing(ctx, env)
		if m == nil {
			env.Logf("network up, clock set (%s), binary cache answers", env.Clock().UTC().Format(time.RFC3339))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !env.Clock().Before(deadline) {
			return engine.WithHint(fmt.Errorf("network: %s missing after %s: %s", m.what, s.timeout, m.why), m.hint)
		}
		if now := env.Clock(); m.what != last || now.Sub(shown) >= time.Minute {
			env.Logf("waiting up to %s for the %s: %s", deadline.Sub(now).Round(time.Second), m.what, m.why)
			last, shown = m.what, now
		}
		if err := env.Wait(ctx, networkPoll); err != nil {
			return fmt.Errorf("network: waiting for the %s: %w", m.what, err)
		}
	}
}
