package builder

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/nixpi/nixpi/firstboot/cardpath"
)

type cpioEntry struct {
	Name     string
	Mode     cpio.FileMode
	Uid, Gid int
	ModTime  int64
	Linkname string
	Data     string
}

func readCPIO(t *testing.T, archive []byte) []cpioEntry {
	t.Helper()
	r := cpio.NewReader(bytes.NewReader(archive))
	var out []cpioEntry
	for {
		hdr, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read payload: %v", err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read %s: %v", hdr.Name, err)
		}
		out = append(out, cpioEntry{hdr.Name, hdr.Mode, hdr.Uid, hdr.Guid, hdr.ModTime.Unix(), hdr.Linkname, string(data)})
	}
}

func TestPayloadEntries(t *testing.T) {
	t.Parallel()
	binary := []byte("\x7fELF pretend binary")
	epoch := time.Unix(1700000000, 0)
	archive, err := Payload(binary, "/boot/firmware", epoch)
	if err != nil {
		t.Fatal(err)
	}
	entries := readCPIO(t, archive)
	var got []string
	for _, e := range entries {
		got = append(got, fmt.Sprintf("%s %o %s", e.Name, uint32(e.Mode), e.Linkname))
		if e.Uid != 0 || e.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want 0:0", e.Name, e.Uid, e.Gid)
		}
		if e.ModTime != epoch.Unix() {
			t.Errorf("%s mtime %d, want %d", e.Name, e.ModTime, epoch.Unix())
		}
	}
	want := []string{
		"etc 40755 ",
		"etc/systemd 40755 ",
		"etc/systemd/system 40755 ",
		"etc/systemd/system/multi-user.target.wants 40755 ",
		"etc/systemd/system/multi-user.target.wants/nixpi-firstboot.service 120777 ../nixpi-firstboot.service",
		"etc/systemd/system/nixpi-firstboot.service 100644 ",
		"usr 40755 ",
		"usr/local 40755 ",
		"usr/local/sbin 40755 ",
		"usr/local/sbin/nixpi-firstboot 100755 ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("payload entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, e := range entries {
		switch e.Name {
		case cardpath.InstalledBinary:
			if e.Data != string(binary) {
				t.Errorf("binary in payload differs from the input")
			}
		case cardpath.Unit:
			if !strings.Contains(e.Data, "ExecStart=/usr/local/sbin/nixpi-firstboot run --config /boot/firmware/nixpi/nixpi.toml --boot-dir /boot/firmware\n") {
				t.Errorf("unit in payload has the wrong ExecStart:\n%s", e.Data)
			}
		}
	}
}

func TestPayloadReproducible(t *testing.T) {
	t.Parallel()
	a, err := Payload([]byte("binary"), "/boot", time.Unix(1600000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Payload([]byte("binary"), "/boot", time.Unix(1600000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two payloads from the same inputs differ")
	}
	c, err := Payload([]byte("binary"), "/boot", time.Unix(1600000001, 0))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, c) {
		t.Fatal("payloads with different epochs are identical: the epoch is not recorded")
	}
}

func TestPayloadRejectsBadInput(t *testing.T) {
	t.Parallel()
	if _, err := Payload(nil, "/boot", time.Unix(0, 0)); err == nil {
		t.Error("Payload with an empty binary succeeded")
	}
	if _, err := Payload([]byte("x"), "boot", time.Unix(0, 0)); err == nil {
		t.Error("Payload with a relative mount point succeeded")
	}
}
