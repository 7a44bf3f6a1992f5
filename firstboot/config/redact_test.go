package config

import (
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
