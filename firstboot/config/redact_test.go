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

// A secret key is known however TOML spells it: quoted, 'literal',
// escaped, dotted, in an inline table.
func TestRedactionKnowsEveryKeySpelling(t *testing.T) {
	t.Parallel()
	const psk = "CorrectHorseBatteryStaple"
	const hash = "$6$saltsalt$Zm9vYmFyYmF6cXV4"
	for name, body := range map[string]string{
		`"psk"`:                   "schema = 1\n[wlan]\nssid = \"home\"\n\"psk\" = " + psk + "\n",
		`'psk'`:                   "schema = 1\n[wlan]\nssid = \"home\"\n'psk' = " + psk + "\n",
		`"p\u0073k"`:              "schema = 1\n[wlan]\nssid = \"home\"\n\"p\\u0073k\" = " + psk + "\n",
		`wlan."psk"`:              "schema = 1\nwlan.\"psk\" = " + psk + "\n",
		"inline table":            "schema = 1\nwlan = { ssid = \"home\", \"p\\u0073k\" = " + psk + " }\n",
		`"password\u005fhash"`:    "schema = 1\n[[users]]\nname = \"pi\"\n\"password\\u005fhash\" = " + hash + "\n",
		`'password_hash'`:         "schema = 1\n[[users]]\nname = \"pi\"\n'password_hash' = " + hash + "\n",
		"multi-line psk, cut off": "schema = 1\n[wlan]\nssid = \"home\"\npsk = \"\"\"" + psk + "\"\"\" x\n",
	} {
		_, err := Parse("nixpi.toml", []byte(body))
		if err == nil {
			t.Errorf("%s: parsed", name)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "Horse") || strings.Contains(msg, "Zm9v") || strings.Contains(msg, "saltsalt") {
			t.Errorf("%s: error quotes the secret: %s", name, msg)
		}
		if !strings.Contains(msg, "nixpi.toml:") {
			t.Errorf("%s: error lost its file:line: %s", name, msg)
		}
	}
}

// A syntax error may quote a single character of a secret, or a short
// one whole: on the secret's line no quoted piece of it is shown.
func TestRedactionShortPieces(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ body, piece string }{
		{"psk = x7!", `"x"`},
		{"psk = \"ab\" cd", `'c'`},
		{"psk = \"a\\qb\"", `'\q'`},
		{"psk = 12ab", `'a'`},
	} {
		_, err := Parse("nixpi.toml", []byte("schema = 1\n[wlan]\nssid = \"home\"\n"+tt.body+"\n"))
		if err == nil {
			t.Errorf("%s: parsed", tt.body)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, tt.piece) || !strings.Contains(msg, "(redacted)") {
			t.Errorf("%s: error shows %s: %s", tt.body, tt.piece, msg)
		}
	}
	// On another line a character that is also in the secret is just a
	// character; the secret quoted whole is not.
	_, err := Parse("nixpi.toml", []byte("schema = 1\n[wlan]\nssid = \"home\"\npsk = \"xyzw1234\"\n[system]\nhostname = x!\n"))
	if err == nil || !strings.Contains(err.Error(), `nixpi.toml:6: not valid TOML: expected value but found "x" instead`) {
		t.Errorf("another line's error lost its quote: %v", err)
	}
	_, err = Parse("nixpi.toml", []byte("schema = 1\n[wlan]\nssid = \"home\"\npsk = \"xyzw1234\"\n[system]\nhostname = xyzw1234\n"))
	if err == nil || strings.Contains(err.Error(), "xyzw1234") {
		t.Errorf("another line's error quotes the secret: %v", err)
	}
}

// The digest blanks a secret however its key is spelled and however long
// its value, so it confirms no guess.
func TestChangeDigestIgnoresSecretsHoweverSpelled(t *testing.T) {
	t.Parallel()
	for _, base := range []string{
		"schema = 1\n[wlan]\n\"p\\u0073k\" = \"%s\"\n",
		"schema = 1\nwlan = { ssid = \"x\", 'psk' = '%s' }\n",
		"schema = 1\n[wlan]\npsk = \"\"\"\n%s\n\"\"\"\n",
		"schema = 1\n[[users]]\nname = \"a\"\n\"password\\u005fhash\" = \"%s\"\n",
	} {
		if ChangeDigest([]byte(fmt.Sprintf(base, "correct horse"))) != ChangeDigest([]byte(fmt.Sprintf(base, "another guess"))) {
			t.Errorf("the digest of %q depends on the secret", base)
		}
	}
}

// SecretAssignments names each secret key as TOML reads it, where it is
// and whether it starts its line, however the key is spelled.
func TestSecretAssignments(t *testing.T) {
	t.Parallel()
	data := "schema = 1\n[wlan]\n  \"p\\u0073k\" = \"a b c d\"\n[[users]]\nname = \"x\"\n'password_hash' = \"\"\"\nh1\nh2\"\"\"\nwlan.\"psk\" = \"e f\"\n"
	var got []string
	for _, a := range SecretAssignments([]byte(data)) {
		got = append(got, fmt.Sprintf("%s %v %d-%d %q", a.Key, a.LineStart, a.FirstLine, a.LastLine, a.Values))
	}
	want := []string{`psk true 3-3 ["a b c d"]`, `password_hash true 6-8 ["h1\nh2"]`, `psk false 9-9 ["e f"]`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
