package steps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
)

type scrubStep struct{}

// NewScrub removes the Wi-Fi key and the password hashes from the card's
// nixpi/nixpi.toml once NixOS has booted from the SSD with them (before
// that, a failed trial boot is retried from the card's config), so a card
// lying around leaks nothing. It runs before retire: a retired card never runs the service
// again, so nothing could finish an interrupted scrub.
func NewScrub() engine.Step { return scrubStep{} }

func (scrubStep) Name() string    { return "scrub" }
func (scrubStep) Needs() []string { return []string{"confirm"} }
func (scrubStep) Describe() string {
	return "removing the Wi-Fi key and password hashes from " + cardpath.Config + " (the SSD has them)"
}

const scrubNote = "removed by nixpi after the install: the installed system has it, this card need not"

func (scrubStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	card := env.Path(env.BootDir)
	if _, err := os.Stat(filepath.Join(card, cardpath.ConfigScrubbed)); err == nil {
		return false, "a scrub was interrupted: " + cardpath.Config + " may still hold what it replaces", nil
	}
	cfg, _, err := readCardConfig(env)
	if err != nil {
		return false, "", err
	}
	if keys := secretKeys(cfg); len(keys) > 0 {
		return false, fmt.Sprintf("%s still holds %s", cardpath.Config, strings.Join(keys, ", ")), nil
	}
	return true, cardpath.Config + " holds no secrets", nil
}

func readCardConfig(env *engine.Env) (*config.Config, []byte, error) {
	data, err := os.ReadFile(filepath.Join(env.Path(env.BootDir), cardpath.Config))
	if err != nil {
		return nil, nil, err
	}
	cfg, err := config.Parse(cardpath.Config, data)
	if err != nil {
		return nil, nil, err
	}
	return cfg, data, nil
}

// secretKeys names the secrets cfg holds, never their values.
func secretKeys(cfg *config.Config) []string {
	var keys []string
	for _, u := range cfg.Users {
		if u.PasswordHash != "" {
			keys = append(keys, fmt.Sprintf("the password_hash of %s", u.Name))
		}
	}
	if cfg.WLAN != nil && cfg.WLAN.PSK != "" {
		keys = append(keys, "wlan.psk")
	}
	return keys
}

// secretValues are the secrets' values, for finding them in other files.
// One equal to a value that stays on the card anyway (the network's name:
// a psk may be its SSID) reveals nothing and is left out.
func secretValues(cfg *config.Config) []string {
	public := map[string]bool{cfg.System.Hostname: true}
	if cfg.WLAN != nil {
		public[cfg.WLAN.SSID] = true
	}
	for _, u := range cfg.Users {
		public[u.Name] = true
	}
	var out []string
	add := func(s string) {
		if s != "" && !public[s] {
			out = append(out, s)
		}
	}
	for _, u := range cfg.Users {
		add(u.PasswordHash.Reveal())
	}
	if cfg.WLAN != nil {
		add(cfg.WLAN.PSK.Reveal())
	}
	return out
}

// The scrub never frees a cluster that held a secret (a FAT's free space
// is there for anyone who reads the card): the config is overwritten in
// place, padded to at least its old length. A power cut during that write
// could tear it, so the scrubbed text is first put in
// cardpath.ConfigScrubbed, which readers prefer while it exists and a
// rerun finishes from.
func (scrubStep) Run(ctx context.Context, env *engine.Env) error {
	card := env.Path(env.BootDir)
	pending := filepath.Join(card, cardpath.ConfigScrubbed)
	out, err := os.ReadFile(pending)
	var secrets []string
	switch {
	case err == nil:
		env.Logf("finishing the scrub a power cut interrupted")
		if secrets, err = secretsOfTorn(card, out); err != nil {
			return err
		}
	case errors.Is(err, os.ErrNotExist):
		cfg, data, err := readCardConfig(env)
		if err != nil {
			return err
		}
		ho := handOver(env)
		if len(ho.Logins) == 0 {
			ho.Hostname, ho.Logins = cfg.System.Hostname, logins(cfg)
		}
		keys := secretKeys(cfg)
		if len(keys) == 0 {
			return nil
		}
		if out, err = scrubConfig(cfg, data); err != nil {
			return err
		}
		secrets = secretValues(cfg)
		if err := writeFileSynced(pending, out, 0o644); err != nil {
			return fmt.Errorf("scrub: %w", err)
		}
		env.Crash("scrub: wrote " + cardpath.ConfigScrubbed)
		ho.Scrubbed = keys
	default:
		return err
	}
	if err := overwriteInPlace(filepath.Join(card, cardpath.Config), out); err != nil {
		return fmt.Errorf("scrub: %w", err)
	}
	env.Crash("scrub: replaced " + cardpath.Config)
	copies, err := scrubCopies(card, secrets)
	if err != nil {
		return fmt.Errorf("scrub: %w", err)
	}
	if err := rewriteManifest(card, out); err != nil {
		return fmt.Errorf("scrub: %w", err)
	}
	if err := os.Remove(pending); err != nil {
		return fmt.Errorf("scrub: %w", err)
	}
	if err := syncDir(filepath.Join(card, cardpath.Dir)); err != nil {
		return err
	}
	if ho := handOver(env); len(ho.Scrubbed) > 0 {
		env.Logf("removed from %s: %s", cardpath.Config, strings.Join(ho.Scrubbed, ", "))
	}
	if len(copies) > 0 {
		env.Logf("zeroed and removed copies of the config that held its secrets: %s", strings.Join(copies, ", "))
	}
	return nil
}

// secretsOfTorn recovers, after a power cut, the secrets the torn config
// may still hold: those in what is left of it that the scrubbed text lacks.
func secretsOfTorn(card string, scrubbed []byte) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(card, cardpath.Config))
	if err != nil {
		return nil, err
	}
	if cfg, err := config.Parse(cardpath.Config, data); err == nil {
		return secretValues(cfg), nil
	}
	// Torn: nothing to parse; the copies are found by the values of the
	// secret keys config recognises in what is left, however spelled.
	var out []string
	for _, a := range config.SecretAssignments(data) {
		for _, v := range a.Values {
			if !bytes.Contains(scrubbed, []byte(v)) && !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out, nil
}

// overwriteInPlace writes data over path's own clusters, padded with
// newlines to at least the old length (TOML ignores blank lines), and
// fsyncs it: no truncation, so nothing that held the old bytes is freed.
func overwriteInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if pad := fi.Size() - int64(len(data)); pad > 0 {
		data = append(bytes.Clone(data), bytes.Repeat([]byte("\n"), int(pad))...)
	}
	_, werr := f.WriteAt(data, 0)
	return errors.Join(werr, f.Sync(), f.Close())
}

// maxCopySize bounds the files scrubCopies reads: a config copy is small.
const maxCopySize = 1 << 20

// scrubCopies zeroes in place and removes every other small file at the
// card's root or in nixpi/ that holds one of the secrets: an editor's
// nixpi.toml~ or .bak, a copy made by hand. The journal and the log never
// hold a secret and stay.
func scrubCopies(card string, secrets []string) ([]string, error) {
	if len(secrets) == 0 {
		return nil, nil
	}
	keep := map[string]bool{cardpath.Config: true, cardpath.ConfigScrubbed: true, cardpath.Journal: true, cardpath.Log: true}
	var removed []string
	for _, dir := range []string{".", cardpath.Dir} {
		entries, err := os.ReadDir(filepath.Join(card, dir))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			rel := path.Join(dir, e.Name())
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() || info.Size() > maxCopySize || keep[rel] {
				continue
			}
			full := filepath.Join(card, rel)
			data, err := os.ReadFile(full)
			if err != nil {
				return nil, err
			}
			if !slices.ContainsFunc(secrets, func(s string) bool { return bytes.Contains(data, []byte(s)) }) {
				continue
			}
			if err := overwriteInPlace(full, make([]byte, len(data))); err != nil {
				return nil, err
			}
			if err := os.Remove(full); err != nil {
				return nil, err
			}
			removed = append(removed, rel)
		}
	}
	return removed, nil
}

// rewriteManifest puts the scrubbed config's size and sha256 into
// manifest.json in place of the original's: a sha256 of the file with the
// secrets would confirm a guess at them. Every other field stays.
func rewriteManifest(card string, scrubbed []byte) error {
	p := filepath.Join(card, cardpath.Manifest)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%s: %w", cardpath.Manifest, err)
	}
	sum := sha256.Sum256(scrubbed)
	hexSum := hex.EncodeToString(sum[:])
	if c, ok := m["config"].(map[string]any); ok {
		c["sha256"] = hexSum
	}
	if files, ok := m["files"].([]any); ok {
		for _, f := range files {
			if e, ok := f.(map[string]any); ok && e["path"] == cardpath.Config {
				e["sha256"], e["size"] = hexSum, len(scrubbed)
			}
		}
	}
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSynced(p, append(out, '\n'), 0o644)
}

// logins says who can log in to the installed system, and how.
func logins(cfg *config.Config) []string {
	var out []string
	for _, u := range cfg.Users {
		var how []string
		if len(u.SSHKeys) > 0 {
			how = append(how, "ssh key")
		}
		if u.PasswordHash != "" {
			how = append(how, "password")
		}
		out = append(out, fmt.Sprintf("%s (%s)", u.Name, strings.Join(how, ", ")))
	}
	return out
}

var tableRE = regexp.MustCompile(`^\s*\[\[?\s*([A-Za-z_."]+?)\s*\]\]?\s*(#.*)?$`)

// scrubConfig rewrites the config's text: each secret line becomes a note,
// and a [[users]] entry whose only login was a password hash is commented
// out whole (a user who cannot log in is not a valid entry). The result must
// parse and hold none of the secrets; when the file's shape defeats the line
// edit (inline tables, multi-line strings) it is written canonically instead.
func scrubConfig(cfg *config.Config, data []byte) ([]byte, error) {
	secrets := secretValues(cfg)
	clean := func(out []byte) bool {
		got, err := config.Parse(cardpath.Config, out)
		if err != nil || len(secretKeys(got)) > 0 {
			return false
		}
		for _, s := range secrets {
			if bytes.Contains(out, []byte(s)) {
				return false
			}
		}
		return true
	}
	if out := scrubLines(cfg, data); clean(out) {
		return out, nil
	}
	c := *cfg
	c.Users = nil
	for _, u := range cfg.Users {
		if len(u.SSHKeys) == 0 {
			continue
		}
		u.PasswordHash = ""
		c.Users = append(c.Users, u)
	}
	if cfg.WLAN != nil {
		w := *cfg.WLAN
		w.PSK = ""
		c.WLAN = &w
	}
	out, err := config.Encode(&c)
	if err != nil {
		return nil, err
	}
	out = append([]byte("# password hashes and wlan.psk "+scrubNote+"\n"), out...)
	if !clean(out) {
		return nil, fmt.Errorf("scrub %s: the rewritten config does not parse or still holds a secret; the card's file was left as it was", cardpath.Config)
	}
	return out, nil
}

func scrubLines(cfg *config.Config, data []byte) []byte {
	// The lines that set a secret, as config recognises its key however
	// TOML spells it ("p\u0073k" too): the first line of each, and the
	// lines a multi-line value continues on.
	first := map[int]config.SecretAssignment{}
	continued := map[int]bool{}
	for _, a := range config.SecretAssignments(data) {
		if !a.LineStart {
			continue // a dotted key or an inline table: written canonically instead
		}
		first[a.FirstLine] = a
		for n := a.FirstLine + 1; n <= a.LastLine; n++ {
			continued[n] = true
		}
	}
	lines := strings.SplitAfter(string(data), "\n")
	var out strings.Builder
	table, user := "", -1
	commentOut, dropping := false, false
	for i, line := range lines {
		n := i + 1
		if dropping && continued[n] {
			continue
		}
		dropping = false
		if m := tableRE.FindStringSubmatch(line); m != nil {
			table = m[1]
			commentOut = false
			if table == "users" {
				user++
				if user < len(cfg.Users) && len(cfg.Users[user].SSHKeys) == 0 {
					commentOut = true
					fmt.Fprintf(&out, "# [[users]] %s: %s (its only login, password_hash, %s)\n", cfg.Users[user].Name, "commented out by nixpi", scrubNote)
					continue
				}
			}
		}
		if a, ok := first[n]; ok && (a.Key == "psk" && table == "wlan" || a.Key == "password_hash" && table == "users") {
			if !commentOut {
				indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
				fmt.Fprintf(&out, "%s# %s %s\n", indent, a.Key, scrubNote)
			}
			dropping = true
			continue
		}
		if commentOut && strings.TrimSpace(line) != "" {
			out.WriteString("# " + line)
			continue
		}
		out.WriteString(line)
	}
	return []byte(out.String())
}
