package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// A config that does not parse has no Secret values to hide behind: the
// error itself must not quote what was written for psk or password_hash.
func TestParseErrorsNeverQuoteSecrets(t *testing.T) {
	t.Parallel()
	const psk = "CorrectHorseBatteryStaple"
	const hash = "$6$saltsalt$Zm9vYmFyYmF6cXV4"
	for name, body := range map[string]string{
		"unquoted psk":          "schema = 1\n[wlan]\nssid = \"home\"\npsk = " + psk + "\ncountry = \"DE\"\n",
		"unterminated psk":      "schema = 1\n[wlan]\nssid = \"home\"\npsk = \"" + psk + "\ncountry = \"DE\"\n",
		"psk of the wrong type": "schema = 1\n[wlan]\nssid = \"home\"\npsk = [\"" + psk + "\"]\n",
		"unquoted hash":         "schema = 1\n[[users]]\nname = \"pi\"\npassword_hash = " + hash + "\n",
	} {
		_, err := Parse("nixpi.toml", []byte(body))
		if err == nil {
			t.Errorf("%s: parsed", name)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, psk) || strings.Contains(msg, hash) || strings.Contains(msg, "CorrectHorse") {
			t.Errorf("%s: error quotes the secret: %s", name, msg)
		}
		if !strings.Contains(msg, "nixpi.toml:") {
			t.Errorf("%s: error lost its file:line: %s", name, msg)
		}
	}
}

// The journal's config digest changes with an edit, but not with the
// secrets: a digest of the file would confirm a guessed Wi-Fi key.
func TestChangeDigestIgnoresSecrets(t *testing.T) {
	t.Parallel()
	base := "schema = 1\n[wlan]\nssid = \"home\"\npsk = \"%s\"\n[[users]]\nname = \"a\"\n\"password_hash\" = '%s'\n"
	a := ChangeDigest([]byte(fmt.Sprintf(base, "correct horse", "$6$x$y")))
	if b := ChangeDigest([]byte(fmt.Sprintf(base, "another guess", "$6$z$w"))); a != b {
		t.Error("the digest depends on the secrets")
	}
	if c := ChangeDigest([]byte(strings.Replace(fmt.Sprintf(base, "correct horse", "$6$x$y"), "home", "office", 1))); a == c {
		t.Error("an edit of the ssid is not a change")
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf(base, "correct horse", "$6$x$y")))
	if a == hex.EncodeToString(sum[:]) {
		t.Error("the digest is the file's")
	}
}
