package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
)

// secretValueRE finds the value written for a secret key (psk,
// password_hash) on a config line, quoted or not, finished or not.
var secretValueRE = regexp.MustCompile(`(?:psk|password_hash)["']?\s*=\s*("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,}#]+)`)

// quotedRE finds what an error message quotes.
var quotedRE = regexp.MustCompile(`"[^"]*"|'[^']*'`)

// redactSecrets keeps the secrets of a config that failed to parse out of
// the error, which goes to the terminal, and on the Pi to the journal,
// install.log and the consoles. Parse never quotes a secret it understood, but a TOML syntax
// error quotes the token it stopped at (an unquoted psk, say), and a config
// that does not parse has no Secret values to hide behind.
func redactSecrets(err error, data []byte) error {
	var secrets []string
	for _, m := range secretValueRE.FindAllSubmatch(data, -1) {
		if v := strings.Trim(string(m[1]), `"'`); v != "" {
			secrets = append(secrets, v)
		}
	}
	if len(secrets) == 0 {
		return err
	}
	// Shorter pieces would blank out ordinary words (a user's name) and
	// give away next to nothing.
	const minPiece = 4
	redact := func(msg string) string {
		for _, s := range secrets {
			if len(s) >= minPiece {
				msg = strings.ReplaceAll(msg, s, Secret(s).String())
			}
		}
		return quotedRE.ReplaceAllStringFunc(msg, func(q string) string {
			inner := q[1 : len(q)-1]
			for _, s := range secrets {
				if len(inner) >= minPiece && strings.Contains(s, inner) {
					return q[:1] + Secret(s).String() + q[:1]
				}
			}
			return q
		})
	}
	var errs Errors
	if !errors.As(err, &errs) {
		if msg := redact(err.Error()); msg != err.Error() {
			return errors.New(msg)
		}
		return err
	}
	out := make(Errors, len(errs))
	for i, e := range errs {
		c := *e
		c.Msg = redact(c.Msg)
		out[i] = &c
	}
	return out
}

// ChangeDigest is the hex sha256 of a config file with every secret value
// blanked: what the journal records to recognise an edited config, without
// confirming a guess at the Wi-Fi key or a password hash for whoever reads
// the card. (An edit of a secret alone is not seen as a change; deleting
// the failure marker still is.)
func ChangeDigest(data []byte) string {
	blanked := secretValueRE.ReplaceAllFunc(data, func(m []byte) []byte {
		sub := secretValueRE.FindSubmatchIndex(m)
		return append(append([]byte(nil), m[:sub[2]]...), `""`...)
	})
	sum := sha256.Sum256(blanked)
	return hex.EncodeToString(sum[:])
}
