package config

import (
	"strings"
	"testing"
)

// Timezones are checked against the IANA names, not only their shape.
func TestTimezoneIsIANA(t *testing.T) {
	t.Parallel()
	for tz, ok := range map[string]bool{
		"UTC": true, "Europe/Berlin": true, "America/Argentina/Buenos_Aires": true, "Etc/GMT+5": true,
		"Mars/Olympus_Mons": false, "Europe/Atlantis": false, "Local": false, "localtime": false, "posixrules": false,
	} {
		_, err := Parse("tz.toml", []byte("schema = 1\n[system]\ntimezone = \""+tz+"\"\n"))
		if ok && err != nil {
			t.Errorf("timezone %q refused: %v", tz, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "tz.toml:3: system.timezone = \""+tz+"\"")) {
			t.Errorf("timezone %q: %v, want it refused on line 3", tz, err)
		}
	}
}
