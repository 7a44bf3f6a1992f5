package steps

// The network step against a temp root, a fake clock (env.Sleep advances
// it: no real waiting) and an httptest server standing in for the binary
// cache.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/engine"
)

// fakeCache is an httptest binary cache; down makes it answer 503.
type fakeCache struct {
	srv  *httptest.Server
	down atomic.Bool
	hits atomic.Int32
}

func newFakeCache(t *testing.T) *fakeCache {
	c := &fakeCache{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		if r.URL.Path != "/nix-cache-info" {
			http.NotFound(w, r)
			return
		}
		if c.down.Load() {
			http.Error(w, "no", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func newNetworkUnit(t *testing.T) (*piEnv, *fakeCache, networkStep) {
	p := newPiEnv(t)
	c := newFakeCache(t)
	p.Config.NixOS.Substituters = []string{c.srv.URL + "/"}
	// The card was written an hour before the fake clock's now.
	p.put(t, "/boot/firmware/nixpi/manifest.json", fmt.Sprintf(`{"source_date_epoch": %d}`, p.Clock().Add(-time.Hour).Unix()))
	return p, c, networkStep{client: c.srv.Client(), timeout: 10 * time.Minute}
}

func TestNetworkAllThereSkips(t *testing.T) {
	t.Parallel()
	p, c, step := newNetworkUnit(t)
	p.networkUp(t)
	done, why, err := step.Probe(context.Background(), p.Env)
	if !done || err != nil || why != "network up, clock set, binary cache answers" {
		t.Fatalf("Probe = %v, %q, %v", done, why, err)
	}
	if c.hits.Load() != 1 || len(p.run.Calls()) != 0 {
		t.Errorf("cache hits %d, commands %q", c.hits.Load(), p.run.Transcript())
	}
}

func TestNetworkWaitsForTheCache(t *testing.T) {
	t.Parallel()
	p, c, step := newNetworkUnit(t)
	p.networkUp(t)
	c.down.Store(true)
	start := p.Clock()
	slept := 0
	p.Sleep = func(ctx context.Context, d time.Duration) error {
		slept++
		if slept == 3 {
			c.down.Store(false)
		}
		return nil
	}
	if err := step.Run(context.Background(), p.Env); err != nil {
		t.Fatal(err)
	}
	if slept != 3 || p.Clock() != start {
		t.Errorf("slept %d times", slept)
	}
	if !strings.Contains(p.log(), "waiting up to 10m0s for the binary cache: GET "+c.srv.URL+"/nix-cache-info: the server answered 503") {
		t.Errorf("log:\n%s", p.log())
	}
}

func TestNetworkBoundNamesTheCache(t *testing.T) {
	t.Parallel()
	p, c, step := newNetworkUnit(t)
	p.networkUp(t)
	c.down.Store(true)
	start := p.Clock()
	err := step.Run(context.Background(), p.Env)
	if err == nil || !strings.HasPrefix(err.Error(), "network: binary cache missing after 10m0s: GET "+c.srv.URL+"/nix-cache-info: the server answered 503") {
		t.Fatalf("error = %v", err)
	}
	if h := engine.HintOf(err); !strings.Contains(h, "nixos.substituters") {
		t.Errorf("hint = %q", h)
	}
	if d := p.Clock().Sub(start); d < 10*time.Minute || d > 10*time.Minute+networkPoll {
		t.Errorf("waited %s on the fake clock, want the 10 min bound", d)
	}
	// A person at the console sees it still waiting, once a minute.
	if n := strings.Count(p.log(), "for the binary cache: GET"); n < 10 || n > 11 {
		t.Errorf("%d waiting lines in 10 minutes:\n%s", n, p.log())
	}
}

func TestNetworkBoundNamesTheLink(t *testing.T) {
	t.Parallel()
	p, _, step := newNetworkUnit(t)
	start := p.Clock()
	err := step.Run(context.Background(), p.Env)
	if err == nil || !strings.HasPrefix(err.Error(), "network: link missing: no network after 10m0s: no default route") {
		t.Fatalf("error = %v", err)
	}
	if h := engine.HintOf(err); !strings.Contains(h, "Ethernet cable") || !strings.Contains(h, "[wlan]") {
		t.Errorf("hint = %q", h)
	}
	if d := p.Clock().Sub(start); d < 10*time.Minute || d > 10*time.Minute+time.Minute {
		t.Errorf("waited %s on the fake clock", d)
	}
	if done, why, _ := step.Probe(context.Background(), p.Env); done || why != "link: no default route" {
		t.Errorf("Probe = %v, %q", done, why)
	}
}

func TestNetworkBoundNamesTheClock(t *testing.T) {
	t.Parallel()
	p, _, step := newNetworkUnit(t)
	p.networkUp(t)
	// The card is newer than the clock, and NTP never syncs.
	p.put(t, "/boot/firmware/nixpi/manifest.json", fmt.Sprintf(`{"source_date_epoch": %d}`, p.Clock().Add(24*time.Hour).Unix()))
	p.put(t, p.Tools.Timedatectl, "")
	p.run.On("no\n", p.Tools.Timedatectl, "show", "--property=NTPSynchronized", "--value")
	err := step.Run(context.Background(), p.Env)
	if err == nil || !strings.HasPrefix(err.Error(), "network: clock missing after 10m0s: the clock says 2026-11-25T03:") ||
		!strings.Contains(err.Error(), "before this card was written (2026-11-26T03:00:00Z), and NTP has not synchronised it") {
		t.Fatalf("error = %v", err)
	}
	if h := engine.HintOf(err); !strings.Contains(h, "NTP (UDP port 123)") {
		t.Errorf("hint = %q", h)
	}
	// NTP synchronised: the clock is trusted though older than the card.
	p2, _, step2 := newNetworkUnit(t)
	p2.networkUp(t)
	p2.put(t, "/boot/firmware/nixpi/manifest.json", fmt.Sprintf(`{"source_date_epoch": %d}`, p2.Clock().Add(24*time.Hour).Unix()))
	p2.put(t, p2.Tools.Timedatectl, "")
	p2.run.On("yes\n", p2.Tools.Timedatectl, "show", "--property=NTPSynchronized", "--value")
	if err := step2.Run(context.Background(), p2.Env); err != nil {
		t.Errorf("with NTP synchronised: %v", err)
	}
}
