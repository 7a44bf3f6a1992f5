package assets

import (
	"bytes"
	_ "embed"
	"fmt"
	"path"
	"strings"
	"text/template"
)

//go:embed nixpi-firstboot.service
var firstbootUnitTemplate string

var firstbootUnit = template.Must(template.New("nixpi-firstboot.service").Option("missingkey=error").Parse(firstbootUnitTemplate))

// FirstbootUnit renders the systemd unit that runs the device service, for
// an image whose FAT boot partition is mounted at bootDir ("/boot/firmware"
// on Bookworm and later, "/boot" before).
func FirstbootUnit(bootDir string) ([]byte, error) {
	// The path lands unquoted in ExecStart= and RequiresMountsFor=, so only
	// a clean absolute path without spaces or specifiers is accepted.
	if !path.IsAbs(bootDir) || path.Clean(bootDir) != bootDir || bootDir == "/" ||
		strings.ContainsAny(bootDir, " \t\n\\%\"'$;") {
		return nil, fmt.Errorf("unit: boot partition mount point %q must be a clean absolute path without spaces or special characters", bootDir)
	}
	var buf bytes.Buffer
	if err := firstbootUnit.Execute(&buf, struct{ BootDir string }{bootDir}); err != nil {
		return nil, fmt.Errorf("unit: render: %w", err)
	}
	return buf.Bytes(), nil
}
