package buildertest

import (
	"os"
	"path/filepath"
	"testing"
)

// Config is an install config with secrets, so tests can check they stay
// on the card only.
const Config = `schema = 1

[target]
disk = "auto"
wipe = true

[system]
hostname = "nixpi-test"

[[users]]
name = "pi"
password_hash = "$6$nixpitestsalt$Ox3xYwg3145wMsgZFHZgixeRVLgOmF0QLp0v9eluE20LSrGE5LcTX1aJ3wa5xuTwj9FE93qAQ5HzS4F420yot1"

[wlan]
ssid = "home"
psk = "SECRET-PSK-do-not-print"
country = "DE"
`

// WriteConfig writes Config to dir/nixpi.toml and returns its path.
func WriteConfig(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "nixpi.toml")
	if err := os.WriteFile(p, []byte(Config), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
