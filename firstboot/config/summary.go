package config

import (
	"fmt"
	"slices"
	"strings"
)

// Summary describes the install in a few lines for `nixpi config check` and
// `nixpi inspect`. It shows no secret, only whether one is set.
func (c *Config) Summary() []string {
	target := "the only USB disk (auto)"
	switch {
	case c.Target.Serial != "":
		target = fmt.Sprintf("the USB disk with serial %q", c.Target.Serial)
	case c.Target.Disk != DiskAuto:
		target = c.Target.Disk
	}
	if c.Target.MinSize > 0 {
		target += fmt.Sprintf(", at least %s", c.Target.MinSize)
	}
	if c.Target.Wipe {
		target += ", may be wiped"
	} else {
		target += ", only if empty (wipe = false)"
	}
	swap := "swap " + c.Layout.SwapSize.String()
	switch {
	case c.Layout.SwapSize.RAM:
		swap = "swap the size of RAM (at least 4 GiB minus RAM)"
	case c.Layout.SwapSize.Bytes == 0:
		swap = "no swap"
	}
	root := c.Layout.RootFS + " root"
	if mounts := c.Layout.SubvolumeMounts(); len(mounts) > 0 {
		var m []string
		for _, mt := range mounts {
			m = append(m, mt.Subvolume+" "+mt.Path)
		}
		root += " (" + strings.Join(m, ", ") + ")"
	}
	nixos := "NixOS " + c.NixOS.Release
	if c.NixOS.NixpkgsRev != "" {
		nixos += ", nixpkgs " + c.NixOS.NixpkgsRev[:12]
	}
	if c.NixOS.NixpkgsURL != "" {
		nixos += " from " + c.NixOS.NixpkgsURL
	}
	if c.NixOS.ExtraModule != "" {
		nixos += ", with extra module"
	}
	if c.NixOS.Flake != "" {
		nixos += ", your flake " + c.NixOS.Flake
	}
	if !slices.Equal(c.NixOS.Substituters, []string{CacheNixOS}) {
		nixos += ", caches " + strings.Join(c.NixOS.Substituters, " ")
	}
	nixos += ", Nix installer " + c.Nix.Installer
	users := "none"
	if len(c.Users) > 0 {
		var us []string
		for _, u := range c.Users {
			var how []string
			if u.PasswordHash != "" {
				how = append(how, "password")
			}
			if n := len(u.SSHKeys); n > 0 {
				how = append(how, fmt.Sprintf("%d ssh key(s)", n))
			}
			us = append(us, fmt.Sprintf("%s (%s)", u.Name, strings.Join(how, ", ")))
		}
		users = strings.Join(us, ", ")
	}
	wlan := "none (wired network)"
	if c.WLAN != nil {
		wlan = fmt.Sprintf("%q in %s", c.WLAN.SSID, c.WLAN.Country)
		if c.WLAN.PSK != "" {
			wlan += ", passphrase set"
		} else {
			wlan += ", open"
		}
	}
	lines := []string{
		"target:  " + target,
		fmt.Sprintf("layout:  %s, boot %s, %s, %s", strings.ToUpper(c.Layout.Table), c.Layout.BootSize, swap, root),
		"nixos:   " + nixos,
		fmt.Sprintf("system:  %s, %s, keymap %s, %s", c.System.Hostname, c.System.Timezone, c.System.Keymap, c.System.Locale),
		"users:   " + users,
		"wlan:    " + wlan,
		"boot:    BOOT_ORDER=" + c.Boot.BootOrder,
	}
	if c.Status.Enable {
		lines = append(lines, "status:  page on "+c.Status.Listen)
	}
	return lines
}

// Warnings are things that are allowed but probably not meant.
func (c *Config) Warnings() []string {
	var w []string
	if len(c.Users) == 0 {
		w = append(w, "no [[users]]: you will not be able to log in to the installed system; add a user with a password_hash or ssh_keys")
	}
	if c.NixOS.Flake != "" && (len(c.Users) > 0 || c.WLAN != nil) {
		w = append(w, "nixos.flake is set: your flake decides users, Wi-Fi and [system]; nixpi only writes the password hashes (root-only files under /etc/nixos/secrets/) and the Wi-Fi key (/etc/nixos/wpa_supplicant-secrets.conf, root-only until a tmpfiles rule gives it to wpa_supplicant) for your flake to use")
	}
	if c.Target.Wipe {
		w = append(w, "target.wipe = true: the chosen disk is erased even if it holds data")
	}
	return w
}
