package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/steps"
	"github.com/nixpi/nixpi/firstboot/system"
)

// The secrets of the config below, and pieces of them long enough to
// recognise.
const (
	secretPSK  = "CorrectHorseBatteryStaple-42"
	secretHash = "$6$nixpisalt$/y2YoJAMcoup1ClhVEqFhpCo5UMp2yq8r1XKX3HB3nRUB/OPfcwhFS4YWrNUzD6pdUhiKnloS5u83nPBgXQhP/"
)

var secretPieces = []string{secretPSK, "CorrectHorse", "BatteryStaple", secretHash, "nixpisalt", "y2YoJAMcoup1Clh", "gXQhP/"}

// secretConfig is the example config plus a user with a password hash and
// Wi-Fi with a passphrase.
func secretConfig() string {
	return string(config.Example()) + `
[[users]]
name = "pi"
password_hash = "` + secretHash + `"

[wlan]
ssid = "HomeNet"
psk = "` + secretPSK + `"
country = "DE"
`
}

// shown is everything a person or a program can read from the device: the
// card's journal, install log and failure marker, both consoles, and what
// the service printed.
func (d *device) shown(outputs ...string) map[string]string {
	d.t.Helper()
	got := map[string]string{}
	for _, p := range []string{
		"/boot/firmware/nixpi/journal.jsonl", "/boot/firmware/nixpi/install.log", "/boot/firmware/nixpi/FAILED",
		"/dev/tty1", "/dev/ttyAMA0",
	} {
		data, err := os.ReadFile(filepath.Join(d.root, p))
		if err != nil && !os.IsNotExist(err) {
			d.t.Fatal(err)
		}
		got[p] = string(data)
	}
	got["command lines"] = d.run.Transcript()
	for i, out := range outputs {
		got["output "+string(rune('A'+i))] = out
	}
	return got
}

func assertNoSecrets(t *testing.T, shown map[string]string) {
	t.Helper()
	for where, text := range shown {
		for _, s := range secretPieces {
			if strings.Contains(text, s) {
				t.Errorf("secret piece %q appears in %s:\n%s", s, where, text)
			}
		}
	}
}

// secretDevice is a Pi whose card carries configText, with two consoles.
func secretDevice(t *testing.T, configText string) *device {
	d := newDevice(t)
	d.put("/boot/firmware/nixpi/nixpi.toml", configText)
	d.put("/proc/consoles", "tty1                 -WU (EC p  )    4:1\nttyAMA0              -W- (E  p  )  204:64\n")
	d.put("/dev/tty1", "")
	d.put("/dev/ttyAMA0", "")
	d.run.On("aarch64\n", "/usr/bin/uname", "-m")
	return d
}

// A whole run with secrets in the config: Wi-Fi is brought up with the psk
// (it goes only into NetworkManager's root-only keyfile), packages are
// installed, the run stops at a refusal, and at the end the status is read.
// Neither the psk nor the password hash shows anywhere.
func TestSecretsNeverShownInARun(t *testing.T) {
	t.Parallel()
	d := secretDevice(t, secretConfig())
	d.put("/usr/bin/nmcli", "")
	d.put("/proc/self/mountinfo", "22 1 179:2 / / rw,noatime - ext4 /dev/mmcblk0p2 rw\n23 22 179:1 / /boot/firmware rw - vfat /dev/mmcblk0p1 rw\n")
	d.run.On("", "/usr/bin/nmcli", "connection", "reload")
	d.run.On("", "/usr/bin/nmcli", "connection", "up")
	d.run.On("", "/usr/bin/env", "DEBIAN_FRONTEND=noninteractive", "/usr/bin/apt-get", "update")
	// A failing command's output goes into the error: make it echo the
	// connection, as a chatty tool might.
	d.run.Fail(100, "E: Unable to locate package (connection nixpi-wlan)", "/usr/bin/env", "DEBIAN_FRONTEND=noninteractive", "/usr/bin/apt-get", "install").Times = 1
	d.run.On("", "/usr/bin/env", "DEBIAN_FRONTEND=noninteractive", "/usr/bin/apt-get", "install")
	d.run.On(`{"blockdevices":[{"name":"mmcblk0","kname":"mmcblk0","path":"/dev/mmcblk0","type":"disk","maj:min":"179:0","size":31914983424,"tran":null,"children":[`+
		`{"name":"mmcblk0p1","kname":"mmcblk0p1","path":"/dev/mmcblk0p1","type":"part","maj:min":"179:1","size":536870912},`+
		`{"name":"mmcblk0p2","kname":"mmcblk0p2","path":"/dev/mmcblk0p2","type":"part","maj:min":"179:2","size":31369723904}]}]}`, "/usr/bin/lsblk")
	d.run.OnRun = func(argv []string) {
		switch {
		case len(argv) > 2 && argv[0] == "/usr/bin/nmcli" && argv[2] == "up":
			d.put("/proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\nwlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n")
			d.put("/etc/resolv.conf", "nameserver 192.168.1.1\n")
		case len(argv) > 3 && argv[3] == "install":
			for _, tool := range steps.RequiredTools(&engine.Env{Tools: system.DefaultTools()}) {
				d.put(tool.Path, "")
			}
		}
	}

	// preflight and arm64 alone finish, and the end says what is not done
	// (how to log in comes only once NixOS is installed).
	code, out1, err1 := d.cli(append(runArgs, "--only", "preflight,arm64")...)
	if code != exitOK || !strings.Contains(out1, "all 2 steps done. Not done yet: packages, target,") || strings.Contains(out1, "ssh pi@") {
		t.Fatalf("--only preflight,arm64: exit %d\n%s\n%s", code, out1, err1)
	}
	// The whole run: Wi-Fi, packages (one failed try), then no USB disk.
	code, out2, err2 := d.cli(runArgs...)
	if code != exitFailure || !strings.Contains(err2, "no USB disk matches") {
		t.Fatalf("run: exit %d, want 1 and no USB disk\n%s\n%s", code, out2, err2)
	}
	keyfile, err := os.ReadFile(filepath.Join(d.root, "/run/NetworkManager/system-connections/nixpi-wlan.nmconnection"))
	if err != nil || !strings.Contains(string(keyfile), "psk="+secretPSK) {
		t.Fatalf("the psk did not reach NetworkManager's keyfile (so this test proves nothing): %v\n%s", err, keyfile)
	}
	if !strings.Contains(d.run.Transcript(), "apt-get install") {
		t.Fatalf("apt-get never ran:\n%s", d.run.Transcript())
	}
	code, out3, err3 := d.cli("status")
	if code != exitOK || !strings.Contains(out3, "FAILED") {
		t.Fatalf("status: exit %d\n%s\n%s", code, out3, err3)
	}
	shown := d.shown(out1, err1, out2, err2, out3, err3)
	if !strings.Contains(shown["/dev/ttyAMA0"], "step 4 of 22, target") || !strings.Contains(shown["/boot/firmware/nixpi/install.log"], "HomeNet") {
		t.Fatalf("the consoles or install log lack the run (so this test proves nothing):\n%s", shown["/dev/ttyAMA0"])
	}
	assertNoSecrets(t, shown)
}

// A config that does not parse has no Secret values to hide behind, and a
// TOML syntax error quotes the token it stopped at: the service still shows
// neither secret, yet still names the line to fix.
func TestSecretsNeverShownForABrokenConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, text, wantLine string
	}{
		{"unquoted psk", strings.Replace(secretConfig(), `psk = "`+secretPSK+`"`, `psk = `+secretPSK, 1), "nixpi.toml:"},
		{"unquoted hash", strings.Replace(secretConfig(), `password_hash = "`+secretHash+`"`, `password_hash = `+secretHash, 1), "nixpi.toml:"},
		{"unterminated psk", strings.Replace(secretConfig(), `psk = "`+secretPSK+`"`, `psk = "`+secretPSK, 1), "nixpi.toml:"},
		{"psk with junk after it", strings.Replace(secretConfig(), `psk = "`+secretPSK+`"`, `psk = "`+secretPSK+`" `+secretPSK, 1), "nixpi.toml:"},
		{"hash cut short", strings.Replace(secretConfig(), secretHash, secretHash[:60], 1), "password_hash of user \"pi\" is cut short"},
		{"psk too long", strings.Replace(secretConfig(), secretPSK, strings.Repeat(secretPSK, 3), 1), "wlan.psk is 84 characters"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := secretDevice(t, c.text)
			code, stdout, stderr := d.cli(runArgs...)
			if code != exitFailure || !strings.Contains(stderr, c.wantLine) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q\n%s", code, stderr, c.wantLine, stdout)
			}
			code, status, _ := d.cli("status")
			if code != exitOK || !strings.Contains(status, "config") {
				t.Fatalf("status: exit %d\n%s", code, status)
			}
			assertNoSecrets(t, d.shown(stdout, stderr, status))
		})
	}
}
