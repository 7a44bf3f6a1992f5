package config

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // knownTimezone's fallback: the IANA names on any machine
	"unicode"
	"unicode/utf8"

	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/termtext"
)

// Limits the layout must respect.
const (
	// MinBootSize leaves room for the Pi firmware, U-Boot and a few kernel
	// generations; FAT32 itself needs about 33 MiB.
	MinBootSize = 64 * MiB
	// MinSwapSize is the smallest swap worth having (0 turns swap off).
	MinSwapSize = 16 * MiB
)

// Validate checks every value and the rules between them. The error is an
// Errors whose entries name the key they concern; Parse adds file and line.
func (c *Config) Validate() error {
	v := &validator{}
	v.text(c)
	if c.Schema != SchemaVersion {
		v.add("schema", "schema = %d is not supported: this nixpi reads schema %d", c.Schema, SchemaVersion)
	}
	v.target(&c.Target)
	v.layout(&c.Layout)
	v.nixos(&c.NixOS)
	v.nix(&c.Nix)
	v.system(&c.System)
	v.users(c.Users)
	if c.WLAN != nil {
		v.wlan(c.WLAN)
	}
	v.boot(&c.Boot)
	v.status(&c.Status)
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

type validator struct {
	errs Errors
	// unsafe are the keys whose values hold a control character: that is
	// their problem, and the checks of their form would only repeat it.
	unsafe map[string]bool
}

func (v *validator) add(key, format string, args ...any) {
	if v.unsafe[key] {
		return
	}
	v.errs = append(v.errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) target(t *Target) {
	switch {
	case t.Disk != "" && t.Serial != "":
		v.add("target.serial", "target.disk and target.serial are both set; keep one: serial picks the USB disk with that serial number, disk = \"auto\" the only USB disk")
	case t.Disk == "" && t.Serial == "":
		v.add("target", "no target disk: set target.disk = \"auto\" (exactly one USB disk), a /dev/disk/by-id/ path, or target.serial")
	case t.Disk == DiskAuto || t.Disk == "":
	case strings.HasPrefix(t.Disk, DiskByID):
		if name := strings.TrimPrefix(t.Disk, DiskByID); name == "" || strings.ContainsAny(name, "/ \t\n") {
			v.add("target.disk", "target.disk = %q is not a disk in /dev/disk/by-id/; copy a name from `ls /dev/disk/by-id/` on the Pi", t.Disk)
		}
	default:
		v.add("target.disk", "target.disk = %q: use \"auto\" (exactly one USB disk) or a stable /dev/disk/by-id/ path, since names like /dev/sda change between boots; or set target.serial", t.Disk)
	}
	if t.Serial != "" && !printableNoSpace(t.Serial) {
		v.add("target.serial", "target.serial = %q has spaces or control characters; use the serial as `lsblk -o NAME,SERIAL` shows it", t.Serial)
	}
	if t.MinSize < 0 {
		v.add("target.min_size", "target.min_size must not be negative")
	}
}

var (
	labelRE     = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	subvolumeRE = regexp.MustCompile(`^@[a-z0-9_.-]*$`)
)

func (v *validator) layout(l *Layout) {
	switch l.Table {
	case TableGPT, TableMBR:
	default:
		v.add("layout.table", "layout.table = %q: use \"gpt\" (default) or \"mbr\"", l.Table)
	}
	switch {
	case l.BootSize < MinBootSize:
		v.add("layout.boot_size", "layout.boot_size = %q is too small: the boot partition needs at least %s for the firmware and kernels; the recipe uses \"500MiB\"", l.BootSize, MinBootSize)
	case l.BootSize%MiB != 0:
		v.add("layout.boot_size", "layout.boot_size = %q is not a whole number of MiB; partitions are MiB-aligned, e.g. \"500MiB\"", l.BootSize)
	}
	if !l.SwapSize.RAM {
		switch s := l.SwapSize.Bytes; {
		case s == 0:
		case s < MinSwapSize:
			v.add("layout.swap_size", "layout.swap_size = %q is too small to help; use \"ram\" (default), at least %s, or \"0\" for no swap", s, MinSwapSize)
		case s%MiB != 0:
			v.add("layout.swap_size", "layout.swap_size = %q is not a whole number of MiB; partitions are MiB-aligned, e.g. \"2GiB\"", s)
		}
	}
	switch l.RootFS {
	case FSBtrfs:
		v.subvolumes(l.Subvolumes)
	case FSExt4:
		if len(l.Subvolumes) > 0 {
			v.add("layout.subvolumes", "layout.subvolumes are btrfs subvolumes but layout.root_fs = \"ext4\"; remove subvolumes or use root_fs = \"btrfs\"")
		}
	default:
		v.add("layout.root_fs", "layout.root_fs = %q: use \"btrfs\" (default) or \"ext4\"", l.RootFS)
	}
	labels := []struct {
		key, value string
		max        int
		what       string
	}{
		{"layout.boot_label", l.BootLabel, 11, "FAT"},
		{"layout.swap_label", l.SwapLabel, 15, "swap"},
		{"layout.root_label", l.RootLabel, 16, l.RootFS},
	}
	seen := map[string]string{}
	for _, lb := range labels {
		switch {
		case lb.value == "":
			v.add(lb.key, "%s is empty; give the partition a label", lb.key)
			continue
		case !labelRE.MatchString(lb.value) || len(lb.value) > lb.max:
			v.add(lb.key, "%s = %q: a %s label is 1 to %d letters, digits, '_' or '-'", lb.key, lb.value, lb.what, lb.max)
		case lb.value == "bootfs" || lb.value == "rootfs":
			v.add(lb.key, "%s = %q is the SD card's own label; pick another so the Pi can tell the disks apart", lb.key, lb.value)
		}
		if other, dup := seen[strings.ToLower(lb.value)]; dup {
			v.add(lb.key, "%s = %q is the same as %s; labels must differ", lb.key, lb.value, other)
		}
		seen[strings.ToLower(lb.value)] = lb.key
	}
}

func (v *validator) subvolumes(subvols []string) {
	if !slices.Contains(subvols, RootSubvol) {
		v.add("layout.subvolumes", "layout.subvolumes must include %q, the subvolume mounted at /; the recipe uses [\"@\", \"@nix\", \"@home\"]", RootSubvol)
	}
	seen := map[string]bool{}
	for _, s := range subvols {
		if !subvolumeRE.MatchString(s) {
			v.add("layout.subvolumes", "subvolume %q: names are \"@\" followed by lowercase letters, digits, '_', '-' or '.'; \"@name\" is mounted at /name", s)
		}
		if seen[s] {
			v.add("layout.subvolumes", "subvolume %q is listed twice", s)
		}
		seen[s] = true
	}
}

var (
	releaseRE    = regexp.MustCompile(`^[0-9]{2}\.(05|11)$`)
	hex40RE      = regexp.MustCompile(`^[0-9a-f]{40}$`)
	nixBase32RE  = regexp.MustCompile(`^[0-9abcdfghijklmnpqrsvwxyz]{52}$`)
	sha256HexRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	hostnameRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	timezoneRE   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$`)
	keymapRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	localeRE     = regexp.MustCompile(`^([a-z]{2,3}(_[A-Z]{2})?|C)(\.[A-Za-z0-9-]+)?(@[a-z]+)?$`)
	unixNameRE   = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	bootOrderRE  = regexp.MustCompile(`^0x[0-9a-fA-F]{1,8}$`)
	countryRE    = regexp.MustCompile(`^[A-Z]{2}$`)
	flakeRefRE   = regexp.MustCompile(`^[a-z][a-z0-9+.-]*:[^\s"'\\#]+$`)
	flakeNameRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*$`)
	keyNameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	sha256SRIlen = len("sha256-") + base64.StdEncoding.EncodedLen(32)
)

func (v *validator) nixos(n *NixOS) {
	if !releaseRE.MatchString(n.Release) {
		v.add("nixos.release", "nixos.release = %q: use a NixOS release like \"26.05\" (YY.05 or YY.11)", n.Release)
	}
	if n.NixpkgsRev != "" && !hex40RE.MatchString(n.NixpkgsRev) {
		v.add("nixos.nixpkgs_rev", "nixos.nixpkgs_rev = %q: use a full nixpkgs commit, 40 lowercase hex digits", n.NixpkgsRev)
	}
	if n.NixpkgsSHA256 != "" && !validNixSHA256(n.NixpkgsSHA256) {
		v.add("nixos.nixpkgs_sha256", "nixos.nixpkgs_sha256 = %q: use the hash `nix-prefetch-url --unpack https://github.com/NixOS/nixpkgs/archive/REV.tar.gz` prints (52 characters), an SRI hash \"sha256-...\" or 64 hex digits", n.NixpkgsSHA256)
	}
	switch {
	case n.NixpkgsRev != "" && n.NixpkgsSHA256 == "":
		v.add("nixos.nixpkgs_rev", "nixos.nixpkgs_rev is set without nixos.nixpkgs_sha256, so the download cannot be verified; add the hash `nix-prefetch-url --unpack https://github.com/NixOS/nixpkgs/archive/%s.tar.gz` prints", n.NixpkgsRev)
	case n.NixpkgsRev == "" && n.NixpkgsSHA256 != "":
		v.add("nixos.nixpkgs_sha256", "nixos.nixpkgs_sha256 is set without nixos.nixpkgs_rev; add the commit it belongs to or remove the hash")
	}
	if n.NixpkgsURL != "" {
		// Credentials are looked for first: the other message quotes the URL.
		if user, _ := userinfo(n.NixpkgsURL); user {
			v.add("nixos.nixpkgs_url", "nixos.nixpkgs_url carries a user name or password, which would end up in the install log; use a URL without one")
		} else if u, err := url.Parse(n.NixpkgsURL); err != nil || !slices.Contains(nixpkgsURLSchemes, u.Scheme) || (u.Scheme != "file" && u.Host == "") || strings.ContainsAny(n.NixpkgsURL, "\"\\${} \t\n") {
			v.add("nixos.nixpkgs_url", "nixos.nixpkgs_url = %q is not a tarball URL; write one like %q (schemes: %s), or remove it to fetch nixpkgs from GitHub", n.NixpkgsURL, "https://github.com/NixOS/nixpkgs/archive/REV.tar.gz", strings.Join(nixpkgsURLSchemes, ", "))
		}
	}
	v.flake(n)
	if len(n.Substituters) == 0 {
		v.add("nixos.substituters", "nixos.substituters is empty: without a binary cache the Pi would compile all of NixOS itself (days); use [%q]", CacheNixOS)
	}
	for i, s := range n.Substituters {
		v.substituter(i, s)
	}
	for _, k := range n.TrustedPublicKeys {
		if !validCacheKey(k) {
			v.add("nixos.trusted_public_keys", "trusted public key %q is not NAME:KEY with a base64 ed25519 key; copy it from the cache's documentation, e.g. %q", k, CacheNixOSKey)
		}
	}
}

var nixpkgsURLSchemes = []string{"https", "http", "file"}

// substituter checks one entry of nixos.substituters. The Pi writes them
// into nix.conf separated by spaces, where # starts a comment: a space or a
// # would change what the Pi trusts, so both are refused, not quoted. A
// password (and over http or s3 any user name, which may be a token) would
// be printed by check and inspect and end up in the world-readable store;
// ssh's user name is only that.
func (v *validator) substituter(i int, s string) {
	const key = "nixos.substituters"
	user, password := userinfo(s)
	switch u, err := url.Parse(s); {
	case password || (user && (err != nil || !strings.HasPrefix(u.Scheme, "ssh"))):
		v.add(key, "substituter %d (%s) carries a user name or password, which would be printed and end up in the Nix store; use a URL without one (a netrc file or an ssh key gives the Pi access)", i+1, withoutUserinfo(s))
	case strings.Contains(s, "#") || strings.ContainsFunc(s, unicode.IsSpace):
		v.add(key, "substituter %q holds a space or '#', which nix.conf reads as the end of the entry or a comment; percent-encode them (%%20, %%23)", s)
	case err != nil || !slices.Contains(substituterSchemes, u.Scheme) || (u.Scheme != "file" && u.Host == ""):
		v.add(key, "substituter %q is not a binary cache URL; write one like %q (schemes: %s)", s, CacheNixOS, strings.Join(substituterSchemes, ", "))
	}
}

// userinfo says whether URL s names a user, and a password, before its
// host. It reads the text, so a URL that does not parse is judged too.
func userinfo(s string) (user, password bool) {
	_, rest, ok := strings.Cut(s, "://")
	if !ok {
		return false, false
	}
	if end := strings.IndexAny(rest, "/?#"); end >= 0 {
		rest = rest[:end]
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return false, false
	}
	return true, strings.Contains(rest[:at], ":")
}

// withoutUserinfo is URL s without the user name and password, to name it
// in a message.
func withoutUserinfo(s string) string {
	scheme, rest, _ := strings.Cut(s, "://")
	end := len(rest)
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		end = i
	}
	if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
		rest = rest[at+1:]
	}
	return strconv.Quote(scheme + "://" + rest)
}

var substituterSchemes = []string{"https", "http", "s3", "ssh", "ssh-ng", "file"}

// validCacheKey checks a binary cache public key "name:base64" as
// `nix key convert-secret-to-public` prints it: 32 bytes of ed25519.
func validCacheKey(k string) bool {
	name, b64, ok := strings.Cut(k, ":")
	raw, err := base64.StdEncoding.DecodeString(b64)
	return ok && keyNameRE.MatchString(name) && err == nil && len(raw) == 32
}

// flake checks nixos.flake = "URI#name": a flake the Pi can fetch and the
// nixosConfigurations attribute to install.
func (v *validator) flake(n *NixOS) {
	if n.Flake == "" {
		return
	}
	ref, name, ok := strings.Cut(n.Flake, "#")
	const how = `write "URI#name", e.g. "github:you/nixos-config#barpi" for nixosConfigurations.barpi`
	_, password := userinfo(ref)
	switch {
	case password:
		// Not quoted: printed, logged and in the store, it would give the
		// repository away.
		v.add("nixos.flake", "nixos.flake carries a password (user:password@), which would be printed, logged on the Pi and end up in the Nix store; use a URL without one (an ssh:// URL with a deploy key, or a public repository)")
	case !ok || ref == "" || name == "":
		v.add("nixos.flake", "nixos.flake = %q has no #name; %s", n.Flake, how)
	case strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, ".") || strings.HasPrefix(ref, "path:") || strings.HasPrefix(ref, "file:"):
		v.add("nixos.flake", "nixos.flake = %q is a local path, which the Pi cannot see; push the flake to a git host and %s", n.Flake, how)
	case !flakeRefRE.MatchString(ref):
		v.add("nixos.flake", "nixos.flake = %q: the part before # is not a flake URL (github:OWNER/REPO, git+https://..., https://...); %s", n.Flake, how)
	case !flakeNameRE.MatchString(name):
		v.add("nixos.flake", "nixos.flake = %q: %q is not a nixosConfigurations name (letters, digits, '_', '-'); %s", n.Flake, name, how)
	}
	if n.ExtraModule != "" {
		v.add("nixos.extra_module", "nixos.extra_module is set together with nixos.flake, but with a flake nixpi writes no configuration.nix to add it to; put the module in your flake and remove extra_module")
	}
}

func (v *validator) nix(n *Nix) {
	switch n.Installer {
	case InstallerAuto, InstallerDebian, InstallerOfficial:
	default:
		v.add("nix.installer", "nix.installer = %q: use %q (the OS's own Nix when new enough, else the official release), %q or %q", n.Installer, InstallerAuto, InstallerDebian, InstallerOfficial)
	}
}

func validNixSHA256(s string) bool {
	if nixBase32RE.MatchString(s) || sha256HexRE.MatchString(s) {
		return true
	}
	if b64, ok := strings.CutPrefix(s, "sha256-"); ok && len(s) == sha256SRIlen {
		raw, err := base64.StdEncoding.DecodeString(b64)
		return err == nil && len(raw) == 32
	}
	return false
}

func (v *validator) system(s *System) {
	if !hostnameRE.MatchString(s.Hostname) {
		v.add("system.hostname", "system.hostname = %q: a host name is 1 to 63 letters, digits or '-', not starting or ending with '-' (no dots)", s.Hostname)
	}
	if !timezoneRE.MatchString(s.Timezone) || strings.Contains(s.Timezone, "..") {
		v.add("system.timezone", "system.timezone = %q: use a tz database name like \"UTC\" or \"Europe/Berlin\"", s.Timezone)
	} else if !knownTimezone(s.Timezone) {
		v.add("system.timezone", "system.timezone = %q is not in the IANA tz database: use a name like \"UTC\" or \"Europe/Berlin\" (`timedatectl list-timezones` lists them)", s.Timezone)
	}
	if !keymapRE.MatchString(s.Keymap) {
		v.add("system.keymap", "system.keymap = %q: use a console keymap name like \"us\" or \"de-latin1\"", s.Keymap)
	}
	if !localeRE.MatchString(s.Locale) {
		v.add("system.locale", "system.locale = %q: use a locale like \"en_US.UTF-8\"", s.Locale)
	}
}

// knownTimezone says whether name is in the IANA tz database: the
// machine's, else the copy time/tzdata embeds (a Pi's image may have none).
// Every IANA zone name starts with a capital letter, which keeps out what
// zoneinfo directories hold besides zones (localtime, posixrules, posix/);
// "Local" is Go's name for the machine's zone.
func knownTimezone(name string) bool {
	if name == "" || name[0] < 'A' || name[0] > 'Z' || name == "Local" {
		return false
	}
	_, err := time.LoadLocation(name)
	return err == nil
}

func (v *validator) users(users []User) {
	seen := map[string]bool{}
	for i, u := range users {
		key := fmt.Sprintf("users[%d]", i)
		who := fmt.Sprintf("user %q", u.Name)
		switch {
		case u.Name == "":
			v.add(key+".name", "a [[users]] entry has no name; add name = \"...\"")
			who = fmt.Sprintf("user #%d", i+1)
		case u.Name == "root":
			v.add(key+".name", "user \"root\" cannot be declared here; add your own user (NixOS gives it sudo through the wheel group)")
		case !unixNameRE.MatchString(u.Name):
			v.add(key+".name", "user name %q: use 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter or '_'", u.Name)
		case seen[u.Name]:
			v.add(key+".name", "user %q is declared twice", u.Name)
		}
		seen[u.Name] = true
		if u.PasswordHash != "" {
			if msg := checkPasswordHash(u.PasswordHash.Reveal()); msg != "" {
				v.add(key+".password_hash", "password_hash of %s %s", who, msg)
			}
		}
		for j, k := range u.SSHKeys {
			if msg := checkSSHKey(k); msg != "" {
				v.add(fmt.Sprintf("%s.ssh_keys", key), "ssh_keys entry %d of %s %s", j+1, who, msg)
			}
		}
		if u.PasswordHash == "" && len(u.SSHKeys) == 0 {
			v.add(key, "%s has neither password_hash nor ssh_keys and could never log in; add one", who)
		}
	}
}

// cryptHash is a crypt(3) hash: $id$[params$]salt$hash, for the schemes
// NixOS's libxcrypt accepts and mkpasswd/openssl produce.
var cryptHashRE = regexp.MustCompile(`^\$(y|gy|7|2[abxy]|6|5|sha1|md5|1)\$[./0-9A-Za-z$=,]+$`)

// checkPasswordHash says what is wrong with a password_hash, never quoting it.
func checkPasswordHash(h string) string {
	if !strings.HasPrefix(h, "$") {
		return "is not a crypt hash (it looks like a plain password, which must never be in this file); put the output of `mkpasswd -m yescrypt` or `openssl passwd -6` there"
	}
	if !cryptHashRE.MatchString(h) {
		return "is not a crypt hash of a known kind ($y$ yescrypt, $6$ sha512crypt, $5$, $2b$ bcrypt); make one with `mkpasswd -m yescrypt` or `openssl passwd -6`"
	}
	parts := strings.Split(h, "$")
	switch id := parts[1]; {
	case id == "1" || id == "md5" || id == "sha1":
		return "uses a weak hash scheme; make a new one with `mkpasswd -m yescrypt` or `openssl passwd -6`"
	case id == "6" || id == "5":
		// $6$[rounds=N$]salt$hash; the hash is 86 (sha512) or 43 (sha256) characters.
		want := map[string]int{"6": 86, "5": 43}[id]
		if len(parts) < 4 || len(parts[len(parts)-1]) != want {
			return "is cut short or damaged (wrong length); paste the whole output of `openssl passwd -6`"
		}
	case strings.HasPrefix(id, "2"):
		if len(parts) != 4 || len(parts[3]) != 53 {
			return "is cut short or damaged (a bcrypt hash is $2b$NN$ and 53 characters); paste the whole hash"
		}
	case id == "y" || id == "gy" || id == "7":
		if len(parts) < 5 || parts[len(parts)-1] == "" {
			return "is cut short or damaged; paste the whole output of `mkpasswd -m yescrypt`"
		}
	}
	return ""
}

var sshKeyTypes = []string{
	"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
	"sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
}

// checkSSHKey checks an authorized_keys line "TYPE BASE64 [comment]": the
// base64 blob must decode and start with the same TYPE.
func checkSSHKey(k string) string {
	const how = "; paste one public key line (the .pub file, e.g. ~/.ssh/id_ed25519.pub) per entry"
	if strings.Contains(k, "PRIVATE KEY") {
		return "is a PRIVATE key: never put it in this file; use the matching .pub file" + how
	}
	fields := strings.Fields(k)
	if len(fields) < 2 || strings.ContainsAny(k, "\n\r") {
		return "is not an ssh public key" + how
	}
	if !slices.Contains(sshKeyTypes, fields[0]) {
		return fmt.Sprintf("has unknown key type %q (want one of %s)%s", fields[0], strings.Join(sshKeyTypes, ", "), how)
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil || len(blob) < 4 {
		return "has a damaged key (not base64)" + how
	}
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) || !bytes.Equal(blob[4:4+n], []byte(fields[0])) {
		return fmt.Sprintf("has a damaged key (its data is not a %s key)%s", fields[0], how)
	}
	return ""
}

func (v *validator) wlan(w *WLAN) {
	if n := len(w.SSID); n < 1 || n > 32 {
		v.add("wlan.ssid", "wlan.ssid is %d bytes; a Wi-Fi network name is 1 to 32 bytes", n)
	}
	psk := w.PSK.Reveal()
	switch {
	case psk == "":
		// An open network.
	case len(psk) == 64:
		if _, err := hex.DecodeString(psk); err != nil {
			v.add("wlan.psk", "wlan.psk is 64 characters but not hex; a passphrase is 8 to 63 characters, a raw key 64 hex digits")
		}
	case utf8.RuneCountInString(psk) < 8 || len(psk) > 63:
		v.add("wlan.psk", "wlan.psk is %d characters; a WPA passphrase is 8 to 63 characters (or 64 hex digits)", utf8.RuneCountInString(psk))
	case !printableASCII(psk):
		v.add("wlan.psk", "wlan.psk has characters outside printable ASCII; WPA passphrases are printable ASCII")
	}
	if !countryRE.MatchString(w.Country) {
		v.add("wlan.country", "wlan.country = %q: the Wi-Fi regulatory country is two capital letters (ISO 3166-1), e.g. \"DE\" or \"US\"; the radio stays off without it", w.Country)
	}
}

// BootModes are the Pi 4 bootloader's BOOT_ORDER nibbles.
var BootModes = map[rune]string{
	'0': "SD card detect", '1': "SD card", '2': "network", '3': "RPIBOOT", '4': "USB mass storage",
	'5': "BCM-USB-MSD", '6': "NVMe", '7': "HTTP", 'e': "stop", 'f': "restart",
}

func (v *validator) boot(b *Boot) {
	if !bootOrderRE.MatchString(b.BootOrder) {
		v.add("boot.boot_order", "boot.boot_order = %q: write hex like \"0xf41\" (at most 8 digits, read right to left: 1 SD, 4 USB, f restart)", b.BootOrder)
		return
	}
	modes := strings.ToLower(strings.TrimPrefix(b.BootOrder, "0x"))
	for _, m := range modes {
		if _, ok := BootModes[m]; !ok {
			v.add("boot.boot_order", "boot.boot_order = %q: digit %c is not a Pi 4 boot mode (0-7, e stop, f restart)", b.BootOrder, m)
			return
		}
	}
	if err := eeprom.ReachesUSB(b.BootOrder); err != nil {
		v.add("boot.boot_order", "boot.boot_order = %q: %v", b.BootOrder, err)
	}
}

func (v *validator) status(s *StatusServer) {
	if !s.Enable && s.Listen == "" {
		return
	}
	_, port, err := net.SplitHostPort(s.Listen)
	if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 1 || p > 65535 {
		v.add("status.listen", "status.listen = %q: use HOST:PORT or :PORT, e.g. \":80\"", s.Listen)
	}
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func printableNoSpace(s string) bool {
	return printableASCII(s) && !strings.Contains(s, " ")
}

// text refuses, in every string of the config, the characters
// termtext.Unsafe names (NUL, escape, carriage return, the bidi controls)
// and line breaks and tabs outside nixos.extra_module: they would rewrite
// the files the Pi writes from the config (nix.conf, configuration.nix,
// wpa_supplicant.conf) or the terminal that shows it, and a bidi control
// makes a line read differently from what it does. A secret's value is
// never quoted, nor a URL's that carries credentials.
func (v *validator) text(c *Config) {
	v.unsafe = map[string]bool{}
	walkStrings(reflect.ValueOf(c).Elem(), "", func(key, what, s string, secret bool) {
		multiLine := key == "nixos.extra_module"
		line, r, ok := unsafeRune(s, multiLine)
		if ok {
			return
		}
		shown := fmt.Sprintf(" = %q", s)
		switch user, _ := userinfo(s); {
		case secret || user:
			shown = ""
		case multiLine:
			shown = fmt.Sprintf(" (line %d of the module)", line)
		}
		allowed := "no value in this file may hold one"
		if multiLine {
			allowed = "a module may hold tabs and line breaks, no other control character"
		}
		v.add(key, "%s%s holds %s: %s; remove it", what, shown, runeName(r), allowed)
		if multiLine {
			v.errs[len(v.errs)-1].ValueLine = line
		}
		v.unsafe[key] = true
	})
}

// walkStrings calls f for every string in the config value rv, with its
// dotted key ("users[1].ssh_keys"), a name for it in messages ("ssh_keys
// entry 2 of users[1]") and whether it is a Secret.
func walkStrings(rv reflect.Value, key string, f func(key, what, s string, secret bool)) {
	switch rv.Kind() {
	case reflect.Pointer:
		if !rv.IsNil() {
			walkStrings(rv.Elem(), key, f)
		}
	case reflect.Struct:
		t := rv.Type()
		for i := range t.NumField() {
			name := tagName(t.Field(i))
			if name == "" || name == "-" {
				continue // SwapSize's fields: not strings in the file
			}
			sub := name
			if key != "" {
				sub = key + "." + name
			}
			walkStrings(rv.Field(i), sub, f)
		}
	case reflect.Slice:
		for i := range rv.Len() {
			if rv.Index(i).Kind() == reflect.String {
				f(key, fmt.Sprintf("%s entry %d", key, i+1), rv.Index(i).String(), false)
				continue
			}
			walkStrings(rv.Index(i), fmt.Sprintf("%s[%d]", key, i), f)
		}
	case reflect.String:
		f(key, key, rv.String(), rv.Type() == reflect.TypeOf(Secret("")))
	}
}

// unsafeRune finds the first character of s a config may not hold, and its
// line in s; ok when there is none. A multi-line value (the module) may hold
// tabs and line breaks, CRLF ones too: TOML keeps a multi-line string's CR.
func unsafeRune(s string, multiLine bool) (line int, r rune, ok bool) {
	line = 1
	for i, r := range s {
		switch {
		case multiLine && (r == '\t' || r == '\n' || (r == '\r' && strings.HasPrefix(s[i+1:], "\n"))):
		case r == '\t' || r == '\n' || termtext.Unsafe(r):
			return line, r, false
		}
		if r == '\n' {
			line++
		}
	}
	return 0, 0, true
}

func runeName(r rune) string {
	switch {
	case r == 0:
		return "a NUL (U+0000)"
	case r == '\n':
		return "a line break"
	case r == '\t':
		return "a tab"
	case r == '\r':
		return "a carriage return (U+000D)"
	case r == 0x1b:
		return "an escape character (U+001B), which drives terminals"
	case r >= 0x200e:
		return fmt.Sprintf("a bidi control (%U), which makes text read differently from what it is", r)
	}
	return fmt.Sprintf("a control character (%U)", r)
}
