package assets

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
)

// device holds what `make build` cross-compiles into assets/device/. A plain
// checkout has only the README there, so `go build` and `go test` work
// without the binaries; DeviceBinary then says how to get them.
//
//go:embed all:device
var device embed.FS

// ErrNoDeviceBinary means this nixpi was built without the device binaries.
var ErrNoDeviceBinary = errors.New("this nixpi was built without device binaries: run make build")

// DeviceBinary returns the embedded nixpi-firstboot for linux/goarch
// ("arm64" or "arm", the latter built with GOARM=7).
func DeviceBinary(goarch string) ([]byte, error) {
	if goarch != "arm64" && goarch != "arm" {
		return nil, fmt.Errorf("no nixpi-firstboot for GOARCH %q: only arm64 and arm exist", goarch)
	}
	name := DeviceBinaryName(goarch)
	b, err := device.ReadFile("device/" + name)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(b) == 0) {
		return nil, fmt.Errorf("%s: %w", name, ErrNoDeviceBinary)
	}
	if err != nil {
		return nil, fmt.Errorf("read embedded %s: %w", name, err)
	}
	return b, nil
}

// DeviceBinaryName is the file name `make build` gives the binary for
// linux/goarch inside assets/device/.
func DeviceBinaryName(goarch string) string { return "nixpi-firstboot-linux-" + goarch }
