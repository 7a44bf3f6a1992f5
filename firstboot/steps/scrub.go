package steps

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/retire"
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

func (scrubStep) Run(ctx context.Context, env *engine.Env) error {
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
	out, err := scrubConfig(cfg, data)
	if err != nil {
		return err
	}
	// Replaced by a rename, the old file's clusters would be freed with the
	// secrets still in them, for anyone who reads the card's free space. It
	// is held open across the replace and overwritten with zeros before it
	// goes; the config itself is always either the old file or the new one.
	old, err := os.OpenFile(filepath.Join(env.Path(env.BootDir), cardpath.Config), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer old.Close()
	if err := retire.DirCard(env.Path(env.BootDir)).WriteFile(cardpath.Config, out); err != nil {
		return err
	}
	env.Crash("scrub: replaced " + cardpath.Config)
	if _, err := old.WriteAt(make([]byte, len(data)), 0); err != nil {
		return fmt.Errorf("overwrite the old %s: %w", cardpath.Config, err)
	}
	if err := old.Sync(); err != nil {
		return fmt.Errorf("overwrite the old %s: %w", cardpath.Config, err)
	}
	ho.Scrubbed = keys
	env.Logf("removed from %s: %s", cardpath.Config, strings.Join(keys, ", "))
	return nil
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

var (
	tableRE  = regexp.MustCompile(`^\s*\[\[?\s*([A-Za-z_."]+?)\s*\]\]?\s*(#.*)?$`)
	secretRE = regexp.MustCompile(`^(\s*)["']?(password_hash|psk)["']?\s*=`)
)

// scrubConfig rewrites the config's text: each secret line becomes a note,
// and a [[users]] entry whose only login was a password hash is commented
// out whole (a user who cannot log in is not a valid entry). The result must
// parse and hold none of the secrets; when the file's shape defeats the line
// edit (inline tables, multi-line strings) it is written canonically instead.
func scrubConfig(cfg *config.Config, data []byte) ([]byte, error) {
	var secrets []string
	for _, u := range cfg.Users {
		if u.PasswordHash != "" {
			secrets = append(secrets, u.PasswordHash.Reveal())
		}
	}
	if cfg.WLAN != nil && cfg.WLAN.PSK != "" {
		secrets = append(secrets, cfg.WLAN.PSK.Reveal())
	}
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
	lines := strings.SplitAfter(string(data), "\n")
	var out strings.Builder
	table, user := "", -1
	commentOut := false
	for _, line := range lines {
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
		if m := secretRE.FindStringSubmatch(line); m != nil && (m[2] == "psk" && table == "wlan" || m[2] == "password_hash" && table == "users") {
			if !commentOut {
				fmt.Fprintf(&out, "%s# %s %s\n", m[1], m[2], scrubNote)
			}
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
