package builder

import (
	"bytes"
	"strings"
	"testing"
)

func TestManifestRoundTripSorted(t *testing.T) {
	t.Parallel()
	m := &Manifest{NixpiVersion: "0.1.0", SourceDateEpoch: 1700000000, EpochFrom: "SOURCE_DATE_EPOCH",
		Base:   ManifestBase{SHA256: strings.Repeat("a", 64), Arch: "arm64", BootDir: "/boot/firmware"},
		Config: ManifestInput{SHA256: strings.Repeat("b", 64)}}
	m.AddFile("nixpi/payload.cpio", []byte("cpio"))
	m.AddFile("cmdline.txt", []byte("console=tty1\n"))
	a, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if i, j := bytes.Index(a, []byte(`"cmdline.txt"`)), bytes.Index(a, []byte(`"nixpi/payload.cpio"`)); i < 0 || j < 0 || i > j {
		t.Errorf("files are not sorted by path:\n%s", a)
	}
	if !bytes.Contains(a, []byte(`"sha256": "`+sha256Hex([]byte("cpio"))+`"`)) {
		t.Errorf("payload's sha256 missing:\n%s", a)
	}
	back, err := ParseManifest(a)
	if err != nil {
		t.Fatal(err)
	}
	b, err := back.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("manifest changed in a round trip:\n%s\nvs\n%s", a, b)
	}
	if m.Files[0].Path != "nixpi/payload.cpio" {
		t.Error("Marshal reordered the caller's Files")
	}
}
