package network

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/progress"
	"github.com/nixpi/nixpi/firstboot/system"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

const (
	routeHeader = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
	// 192.168.1.0/24 on wlan0 only: no default route.
	routeLAN = routeHeader + "wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n"
	// default via 192.168.1.1 on wlan0.
	routeDefault = routeHeader + "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
		"wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n"
)

func put(t *testing.T, root, path, data string, perm os.FileMode) {
	t.Helper()
	p := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
}

type fakeClock struct{ now time.Time }

func testEnv(t *testing.T, run *systemtest.Runner) (*engine.Env, *fakeClock, *[]progress.Pattern, *[]string) {
	root := t.TempDir()
	clock := &fakeClock{now: time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)}
	var leds []progress.Pattern
	var logs []string
	cfg := config.Default()
	env := &engine.Env{
		Config: cfg, Root: root, BootDir: "/boot/firmware", Run: run, Tools: system.DefaultTools(),
		Now: func() time.Time { return clock.now },
		Sleep: func(ctx context.Context, d time.Duration) error {
			clock.now = clock.now.Add(d)
			logs = append(logs, "sleep "+d.String())
			return nil
		},
		LED:      func(p progress.Pattern) { leds = append(leds, p) },
		Progress: func(f string, a ...any) { logs = append(logs, strings.TrimSpace(fmt.Sprintf(f, a...))) },
		State:    &journal.State{},
	}
	put(t, root, "proc/net/route", routeLAN, 0o644)
	put(t, root, "etc/resolv.conf", "# no servers yet\n", 0o644)
	return env, clock, &leds, &logs
}

func TestCheck(t *testing.T) {
	t.Parallel()
	env, _, _, _ := testEnv(t, &systemtest.Runner{})
	if st := Check(env); st.Up() || st.String() != "no default route" {
		t.Errorf("LAN only: %v", st)
	}
	put(t, env.Root, "proc/net/route", routeDefault, 0o644)
	if st := Check(env); st.Up() || !strings.Contains(st.String(), "no name server") {
		t.Errorf("no resolver: %v", st)
	}
	put(t, env.Root, "etc/resolv.conf", "nameserver 192.168.1.1\n", 0o644)
	if st := Check(env); !st.Up() || st.DefaultRoute != "wlan0" {
		t.Errorf("up: %+v", st)
	}
	// IPv6-only default route.
	put(t, env.Root, "proc/net/route", routeHeader, 0o644)
	put(t, env.Root, "proc/net/ipv6_route",
		"00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n", 0o644)
	if st := Check(env); !st.Up() || st.DefaultRoute != "eth0" {
		t.Errorf("ipv6: %+v", st)
	}
}

func TestWaitAlreadyUpRunsNothing(t *testing.T) {
	t.Parallel()
	run := &systemtest.Runner{}
	env, _, leds, _ := testEnv(t, run)
	put(t, env.Root, "proc/net/route", routeDefault, 0o644)
	put(t, env.Root, "etc/resolv.conf", "nameserver 1.1.1.1\n", 0o644)
	if err := Wait(context.Background(), env, time.Minute); err != nil {
		t.Fatal(err)
	}
	if len(run.Calls()) != 0 || len(*leds) != 0 {
		t.Errorf("calls %v, leds %v", run.Calls(), *leds)
	}
}

func TestWaitBringsUpWiFiWithNetworkManager(t *testing.T) {
	t.Parallel()
	run := &systemtest.Runner{}
	env, _, leds, logs := testEnv(t, run)
	env.Config.WLAN = &config.WLAN{SSID: "Home; Net", PSK: "s3cret \\pass", Country: "DE"}
	for _, tool := range []string{env.Tools.Nmcli, env.Tools.Iw, env.Tools.Rfkill} {
		put(t, env.Root, tool, "", 0o755)
	}
	polls := 0
	run.On("", env.Tools.Rfkill, "unblock", "wifi")
	run.On("", env.Tools.Iw, "reg", "set", "DE")
	run.On("", env.Tools.Nmcli, "connection", "reload")
	run.On("", env.Tools.Nmcli, "connection", "up")
	// NetworkManager takes two polls to get a lease.
	origSleep := env.Sleep
	env.Sleep = func(ctx context.Context, d time.Duration) error {
		polls++
		if polls == 2 {
			put(t, env.Root, "proc/net/route", routeDefault, 0o644)
			put(t, env.Root, "etc/resolv.conf", "nameserver 192.168.1.1\n", 0o644)
		}
		return origSleep(ctx, d)
	}
	if err := Wait(context.Background(), env, time.Minute); err != nil {
		t.Fatal(err)
	}
	systemtest.Golden(t, "wifi-networkmanager.argv", run.Transcript())
	keyfile := filepath.Join(env.Root, NMConnection)
	st, err := os.Stat(keyfile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keyfile: %v %v", st, err)
	}
	data, _ := os.ReadFile(keyfile)
	for _, want := range []string{"ssid=72;111;109;101;59;32;78;101;116;", `psk=s3cret \\pass`, "key-mgmt=wpa-psk", "id=nixpi-wlan"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("keyfile lacks %q:\n%s", want, data)
		}
	}
	all := run.Transcript() + strings.Join(*logs, "\n")
	if strings.Contains(all, "s3cret") {
		t.Error("the Wi-Fi key appears in a command line or log")
	}
	if len(*leds) != 2 || (*leds)[0] != progress.WaitingForNetwork || (*leds)[1] != progress.Working {
		t.Errorf("leds = %v", *leds)
	}
	noSecretUnder(t, env.Root, "etc", "s3cret")
}

// noSecretUnder fails when any file under root/dir holds secret: the card's
// root filesystem must not keep the Wi-Fi passphrase.
func noSecretUnder(t *testing.T, root, dir, secret string) {
	t.Helper()
	err := filepath.Walk(filepath.Join(root, dir), func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		if data, err := os.ReadFile(p); err != nil || strings.Contains(string(data), secret) {
			t.Errorf("%s holds the Wi-Fi key (%v)", strings.TrimPrefix(p, root), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestWaitWpaSupplicant(t *testing.T) {
	t.Parallel()
	run := &systemtest.Runner{}
	env, _, _, _ := testEnv(t, run)
	// IEEE 802.11i test vector: passphrase "password", SSID "IEEE".
	env.Config.WLAN = &config.WLAN{SSID: "IEEE", PSK: "password", Country: "GB", Hidden: true}
	put(t, env.Root, env.Tools.WpaSupplicant, "", 0o755)
	put(t, env.Root, env.Tools.Dhcpcd, "", 0o755)
	image := "ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev\nupdate_config=1\ncountry=GB\n"
	put(t, env.Root, WpaSupplicantCfg, image, 0o600)
	put(t, env.Root, "proc/self/mountinfo", "22 1 179:2 / / rw - ext4 /dev/root rw\n", 0o644)
	run.On("", env.Tools.Mount, "--bind").Times = 1
	run.On("", env.Tools.Systemctl, "restart", "dhcpcd.service").Times = 1
	run.OnRun = func(argv []string) {
		if strings.HasSuffix(argv[0], "systemctl") {
			put(t, env.Root, "proc/net/route", routeDefault, 0o644)
			put(t, env.Root, "etc/resolv.conf", "nameserver 192.168.1.1\n", 0o644)
		}
	}
	if err := Wait(context.Background(), env, time.Minute); err != nil {
		t.Fatal(err)
	}
	systemtest.Golden(t, "wifi-wpasupplicant.argv", strings.ReplaceAll(run.Transcript(), env.Root, "$ROOT"))
	run.Fail(1, "", env.Tools.Mount) // a second bind would be one too many
	run.On("", env.Tools.Systemctl, "restart", "dhcpcd.service")
	put(t, env.Root, "proc/self/mountinfo", "22 1 179:2 / / rw - ext4 /dev/root rw\n"+
		"31 22 0:25 /nixpi/wpa_supplicant.conf "+filepath.Join(env.Root, WpaSupplicantCfg)+" rw - tmpfs tmpfs rw\n", 0o644)
	// The same boot again (the step redone): the file in /run is rewritten
	// in place, since the bind mount holds its inode, and not bound twice.
	if err := StartWiFi(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(env.Root, WpaSupplicantCfg)); string(got) != image {
		t.Errorf("the card's wpa_supplicant.conf changed:\n%s", got)
	}
	st, err := os.Stat(filepath.Join(env.Root, WpaSupplicantRun))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", WpaSupplicantRun, st, err)
	}
	data, err := os.ReadFile(filepath.Join(env.Root, WpaSupplicantRun))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"country=GB", "ssid=49454545", "scan_ssid=1", "psk=f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("wpa_supplicant.conf lacks %q:\n%s", want, data)
		}
	}
	if strings.Contains(string(data), "password") {
		t.Error("the passphrase itself is in wpa_supplicant.conf")
	}
	noSecretUnder(t, env.Root, "etc", "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e")
}

func TestWaitTimesOutWithHint(t *testing.T) {
	t.Parallel()
	run := &systemtest.Runner{}
	env, clock, leds, _ := testEnv(t, run)
	start := clock.now
	// A wired link with carrier: no Wi-Fi attempt, just waiting for DHCP.
	put(t, env.Root, "sys/class/net/eth0/carrier", "1\n", 0o644)
	put(t, env.Root, "sys/class/net/lo/carrier", "1\n", 0o644)
	err := Wait(context.Background(), env, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "no network after 30s: no default route") {
		t.Fatalf("Wait = %v", err)
	}
	if hint := engine.HintOf(err); !strings.Contains(hint, "Ethernet") {
		t.Errorf("hint = %q", hint)
	}
	if waited := clock.now.Sub(start); waited < 30*time.Second || waited > 30*time.Second+PollInterval {
		t.Errorf("waited %s, want about 30s", waited)
	}
	if len(run.Calls()) != 0 {
		t.Errorf("commands with a wired link: %v", run.Calls())
	}
	if (*leds)[len(*leds)-1] != progress.Working {
		t.Errorf("LED left at %v", (*leds)[len(*leds)-1])
	}
}

func TestDownloadRetriesWithBackoff(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/missing":
			http.NotFound(w, r)
		case hits.Add(1) <= 2:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("hello nix\n"))
		}
	}))
	defer srv.Close()
	env, _, _, logs := testEnv(t, &systemtest.Runner{})
	const wrongSum = "5a7c6d1b7a8ce3f8e7a5f4b1f0a3a6e0f8c2b8f0a1e0f9d3c3b9a0e3d2c1b0a9"
	retry := Retry{Attempts: 4, First: 5 * time.Second, Max: 8 * time.Second}
	if err := Download(context.Background(), env, srv.Client(), srv.URL+"/file", "/var/cache/nixpi/file", "", retry); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(env.Root, "var/cache/nixpi/file")); string(got) != "hello nix\n" {
		t.Errorf("downloaded %q", got)
	}
	if got := strings.Join(filter(*logs, "sleep"), ","); got != "sleep 5s,sleep 8s" {
		t.Errorf("backoff = %s, want 5s then 8s (capped)", got)
	}

	// 404 is not retried; a wrong digest never replaces the file.
	*logs = nil
	err := Download(context.Background(), env, srv.Client(), srv.URL+"/missing", "/var/cache/nixpi/other", "", retry)
	if err == nil || !strings.Contains(err.Error(), "404") || len(filter(*logs, "sleep")) != 0 {
		t.Errorf("404: %v, logs %v", err, *logs)
	}
	err = Download(context.Background(), env, srv.Client(), srv.URL+"/file", "/var/cache/nixpi/file2", wrongSum, Retry{Attempts: 2, First: time.Second})
	if err == nil || !strings.Contains(err.Error(), "sha256 is") {
		t.Errorf("bad digest: %v", err)
	}
	if _, serr := os.Stat(filepath.Join(env.Root, "var/cache/nixpi/file2")); serr == nil {
		t.Error("a download with the wrong digest was kept")
	}
}

func filter(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}
