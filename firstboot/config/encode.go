package config

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/BurntSushi/toml"
)

// Encode writes cfg as canonical TOML: every key in a fixed order, secrets
// included. It is what the builder writes to the card, so Parse of the result
// gives cfg back. Never print it: use Redacted or MarshalTOML for display.
func Encode(cfg *Config) ([]byte, error) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# nixpi install config, written by nixpi; see `nixpi config init` for the documented keys.\n")
	// plainConfig has none of Config's methods, so the encoder does not call
	// the redacting MarshalTOML.
	type plainConfig Config
	if err := toml.NewEncoder(&buf).Encode((*plainConfig)(cfg)); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

// Redacted is a deep copy of c with every secret that is set replaced by
// "(redacted)", safe to print, log, or show in `nixpi inspect`.
func (c *Config) Redacted() *Config {
	r := *c
	r.Layout.Subvolumes = append([]string(nil), c.Layout.Subvolumes...)
	if c.Layout.Subvolumes == nil {
		r.Layout.Subvolumes = nil
	}
	r.NixOS.Substituters = slices.Clone(c.NixOS.Substituters)
	r.NixOS.TrustedPublicKeys = slices.Clone(c.NixOS.TrustedPublicKeys)
	if c.Users != nil {
		r.Users = make([]User, len(c.Users))
		for i, u := range c.Users {
			u.PasswordHash = redactSecret(u.PasswordHash)
			if u.SSHKeys != nil {
				u.SSHKeys = append([]string(nil), u.SSHKeys...)
			}
			r.Users[i] = u
		}
	}
	if c.WLAN != nil {
		w := *c.WLAN
		w.PSK = redactSecret(w.PSK)
		r.WLAN = &w
	}
	return &r
}

func redactSecret(s Secret) Secret {
	if s == "" {
		return ""
	}
	return Secret(redacted)
}

// MarshalTOML gives the TOML of c with secrets redacted, so a Config handed
// to any TOML encoder does not leak them.
func (c *Config) MarshalTOML() ([]byte, error) { return Encode(c.Redacted()) }

// String is the redacted TOML, for %v and logs.
func (c *Config) String() string {
	b, err := c.MarshalTOML()
	if err != nil {
		return fmt.Sprintf("(config: %v)", err)
	}
	return string(b)
}
