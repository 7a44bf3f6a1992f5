package network

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
)

// Files the Wi-Fi setup writes. The pre-shared key goes only into these
// root-only files, never into a command line (the runner logs argv), and
// only under /run: a tmpfs, so no passphrase stays on the card once the Pi
// is off. NetworkManager reads /run/NetworkManager/system-connections/ as
// it does /etc's. wpa_supplicant (through dhcpcd's hook) reads only /etc's
// file, so the one in /run is bind-mounted over it for this boot.
const (
	NMConnection     = "/run/NetworkManager/system-connections/nixpi-wlan.nmconnection"
	WpaSupplicantRun = "/run/nixpi/wpa_supplicant.conf"
	WpaSupplicantCfg = "/etc/wpa_supplicant/wpa_supplicant.conf"
	nmConnectionID   = "nixpi-wlan"
)

// StartWiFi joins the [wlan] network through NetworkManager when the image
// has it (Bookworm and later), else through wpa_supplicant and dhcpcd.
func StartWiFi(ctx context.Context, env *engine.Env) error {
	w := env.Config.WLAN
	t := env.Tools
	env.Logf("no wired link: joining wi-fi %q", w.SSID)
	// The regulatory domain and rfkill keep the radio off on a fresh image;
	// both are best effort (not every image has iw or rfkill).
	if env.Exists(t.Rfkill) {
		if _, err := env.Run.Output(ctx, t.Rfkill, "unblock", "wifi"); err != nil {
			env.Logf("wi-fi: %v", err)
		}
	}
	if w.Country != "" && env.Exists(t.Iw) {
		if _, err := env.Run.Output(ctx, t.Iw, "reg", "set", w.Country); err != nil {
			env.Logf("wi-fi: %v", err)
		}
	}
	switch {
	case env.Exists(t.Nmcli):
		if err := writeSecret(env.Path(NMConnection), nmKeyfile(w)); err != nil {
			return err
		}
		if _, err := env.Run.Output(ctx, t.Nmcli, "connection", "reload"); err != nil {
			return err
		}
		_, err := env.Run.Output(ctx, t.Nmcli, "connection", "up", "id", nmConnectionID)
		return err
	case env.Exists(t.WpaSupplicant):
		if err := bindWpaConfig(ctx, env, wpaConfig(w)); err != nil {
			return err
		}
		unit := "wpa_supplicant.service"
		if env.Exists(t.Dhcpcd) {
			// dhcpcd's hook starts wpa_supplicant for wlan0 on older images.
			unit = "dhcpcd.service"
		}
		_, err := env.Run.Output(ctx, t.Systemctl, "restart", unit)
		return err
	}
	return errors.New("the image has neither NetworkManager (nmcli) nor wpa_supplicant")
}

func writeSecret(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("wi-fi: %w", err)
	}
	if err := renameio.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("wi-fi: %w", err)
	}
	return nil
}

// bindWpaConfig writes the wpa_supplicant config to /run and bind-mounts it
// over the card's, which stays as it was underneath. A second call in the
// same boot rewrites the /run file in place: a rename would leave the bind
// mount showing the old one.
func bindWpaConfig(ctx context.Context, env *engine.Env, data []byte) error {
	src, dst := env.Path(WpaSupplicantRun), env.Path(WpaSupplicantCfg)
	if err := os.MkdirAll(filepath.Dir(src), 0o700); err != nil {
		return fmt.Errorf("wi-fi: %w", err)
	}
	f, err := os.OpenFile(src, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("wi-fi: %w", err)
	}
	_, werr := f.Write(data)
	// An earlier file of another mode keeps it through O_CREATE.
	if err := errors.Join(werr, f.Chmod(0o600), f.Close()); err != nil {
		return fmt.Errorf("wi-fi: write %q: %w", src, err)
	}
	mounts, err := disk.ReadMountInfo(env.Root)
	if err != nil {
		return fmt.Errorf("wi-fi: %w", err)
	}
	if disk.MountAt(mounts, dst) != nil {
		return nil
	}
	// The mount point: an image without the file gets an empty one, which
	// holds nothing secret.
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("wi-fi: %w", err)
	}
	mp, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("wi-fi: %w", err)
	}
	mp.Close()
	if _, err := env.Run.Output(ctx, env.Tools.Mount, "--bind", src, dst); err != nil {
		return engine.WithHint(fmt.Errorf("wi-fi: bind %q over %q: %w", src, dst, err),
			"plug an Ethernet cable into the Pi, or use a Raspberry Pi OS image with NetworkManager (Bookworm or later)")
	}
	return nil
}

// keyfileEscape escapes a GLib key file value.
func keyfileEscape(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == ' ' && i == 0:
			b.WriteString(`\s`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func nmKeyfile(w *config.WLAN) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "[connection]\nid=%s\ntype=wifi\nautoconnect=true\n\n", nmConnectionID)
	ssid := keyfileEscape(w.SSID)
	if strings.ContainsAny(w.SSID, ";") {
		// A ";" would split the value into a list: write the bytes instead.
		var parts []string
		for _, c := range []byte(w.SSID) {
			parts = append(parts, fmt.Sprint(c))
		}
		ssid = strings.Join(parts, ";") + ";"
	}
	fmt.Fprintf(&b, "[wifi]\nmode=infrastructure\nssid=%s\n", ssid)
	if w.Hidden {
		b.WriteString("hidden=true\n")
	}
	b.WriteString("\n")
	if w.PSK != "" {
		fmt.Fprintf(&b, "[wifi-security]\nkey-mgmt=wpa-psk\npsk=%s\n\n", keyfileEscape(w.PSK.Reveal()))
	}
	b.WriteString("[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n")
	return []byte(b.String())
}

// wpaConfig writes the SSID in hex and the key as the derived 256-bit PSK,
// so no quoting of either can go wrong.
func wpaConfig(w *config.WLAN) []byte {
	var b strings.Builder
	b.WriteString("ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev\nupdate_config=1\n")
	if w.Country != "" {
		fmt.Fprintf(&b, "country=%s\n", w.Country)
	}
	fmt.Fprintf(&b, "\nnetwork={\n\tssid=%s\n", hex.EncodeToString([]byte(w.SSID)))
	if w.Hidden {
		b.WriteString("\tscan_ssid=1\n")
	}
	if w.PSK == "" {
		b.WriteString("\tkey_mgmt=NONE\n")
	} else {
		key, err := pbkdf2.Key(sha1.New, w.PSK.Reveal(), []byte(w.SSID), 4096, 32)
		if err != nil {
			// Only FIPS-mode restrictions make this fail; fall back to the
			// passphrase, which wpa_supplicant derives the same key from.
			fmt.Fprintf(&b, "\tpsk=%q\n", w.PSK.Reveal())
		} else {
			fmt.Fprintf(&b, "\tpsk=%s\n", hex.EncodeToString(key))
		}
	}
	b.WriteString("}\n")
	return []byte(b.String())
}
