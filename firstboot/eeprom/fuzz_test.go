package eeprom

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

// fuzzSkeleton is an image whose bootcode section fills the read-only first
// 64 KiB; fuzz data becomes the chain after it, so small inputs reach the
// code that finds and rewrites modifiable files.
func fuzzSkeleton(chain []byte) []byte {
	img := bytes.Repeat([]byte{0xff}, ImageSize)
	binary.BigEndian.PutUint32(img[0:], MagicBootcode)
	binary.BigEndian.PutUint32(img[4:], readOnlySize-8)
	copy(img[8:readOnlySize], make([]byte, readOnlySize-8))
	copy(img[readOnlySize:], chain)
	return img
}

func fileSection(name string, data []byte) []byte {
	b := make([]byte, fileDataOffset, fileDataOffset+len(data)+7)
	binary.BigEndian.PutUint32(b[0:], MagicFile)
	binary.BigEndian.PutUint32(b[4:], uint32(len(data)+fileDataOffset-8))
	copy(b[8:8+fileNameLen], name)
	b = append(b, data...)
	for len(b)%8 != 0 {
		b = append(b, 0xff)
	}
	return b
}

func padSection(n int) []byte {
	b := bytes.Repeat([]byte{0xff}, 8+n)
	binary.BigEndian.PutUint32(b[0:], MagicPadding)
	binary.BigEndian.PutUint32(b[4:], uint32(n))
	return b
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// FuzzParse: no input panics Parse or SetConfig, and whenever SetConfig
// succeeds the result parses back to the same chain and config, with the
// bytes before the file and the reserved last 4 KiB untouched.
func FuzzParse(f *testing.F) {
	cfg := []byte("[all]\nBOOT_UART=0\nBOOT_ORDER=0xf41\n")
	f.Add(fileSection(BootconfTxt, cfg), cfg)
	f.Add(fileSection(BootconfTxt, nil), bytes.Repeat([]byte("x"), MaxFileSize))
	f.Add(concat(fileSection(BootconfSig, []byte("sig")), padSection(4000), fileSection(BootconfTxt, cfg)), []byte("[all]\n"))
	f.Add(concat(fileSection(PubkeyBin, make([]byte, 264)), padSection(16), fileSection(BootconfSig, nil), fileSection(BootconfTxt, cfg), padSection(64)), cfg)
	f.Add(concat(fileSection(BootconfTxt, cfg), fileSection("updatetime", make([]byte, 8))), bytes.Repeat([]byte("y"), 100))
	f.Add([]byte{0x55, 0xaa, 0xf1, 0x1f, 0xff, 0xff, 0xff, 0xf0}, cfg)
	f.Add([]byte{0x55, 0xaa, 0xf1, 0x1f, 0, 0, 0, 4}, cfg)
	f.Add([]byte{}, []byte{})

	f.Fuzz(func(t *testing.T, chain, newCfg []byte) {
		if _, err := Parse(chain); err == nil {
			t.Fatalf("Parse accepted %d bytes", len(chain))
		}
		img := fuzzSkeleton(chain)
		im, err := Parse(img)
		if err != nil {
			return
		}
		_ = im.Config()
		i, err := im.fileIndex(BootconfTxt)
		if err != nil {
			t.Fatal(err)
		}
		hdr := im.sections[i].Offset
		if err := im.SetConfig(newCfg); err != nil {
			if !bytes.Equal(im.Bytes(), img) {
				t.Fatal("failed SetConfig changed the image")
			}
			return
		}
		out := im.Bytes()
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("edited image does not parse: %v", err)
		}
		if !bytes.Equal(back.Config(), newCfg) {
			t.Fatalf("config read back %q, wrote %q", back.Config(), newCfg)
		}
		if !reflect.DeepEqual(back.Sections(), im.Sections()) {
			t.Fatalf("sections after edit %v, fresh parse %v", im.Sections(), back.Sections())
		}
		if !bytes.Equal(out[:hdr], img[:hdr]) || !bytes.Equal(out[ImageSize-eraseSector:], img[ImageSize-eraseSector:]) {
			t.Fatal("bytes before bootconf.txt or in the reserved last 4 KiB changed")
		}
	})
}

// FuzzSetKeys: a valid setting always reads back as set, and setting it again
// changes nothing.
func FuzzSetKeys(f *testing.F) {
	f.Add("[all]\nBOOT_UART=0\n", "BOOT_ORDER", "0xf41")
	f.Add("[all]\r\nBOOT_ORDER=0x1\r\n[pi4]\n", "BOOT_ORDER", "0xf14")
	f.Add("BOOT_UART=1", "HDMI_DELAY", "0")
	f.Add("[none]\nX=1\n[all]\n\n", "X", "")
	f.Add("", "A", "b=c")
	f.Fuzz(func(t *testing.T, cfg, key, value string) {
		s := Setting{key, value}
		out, err := SetKeys([]byte(cfg), s)
		if s.Validate() != nil {
			if err == nil {
				t.Fatalf("SetKeys accepted invalid %q", s)
			}
			return
		}
		if err != nil {
			t.Fatalf("SetKeys(%q): %v", s, err)
		}
		if v, ok := Lookup(out, key); !ok || v != value {
			t.Fatalf("after SetKeys(%q) Lookup = %q, %v; config %q", s, v, ok, out)
		}
		if !Has(out, s) {
			t.Fatalf("Has(%q) false after SetKeys", s)
		}
		again, err := SetKeys(out, s)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("setting %q twice changed %q to %q (%v)", s, out, again, err)
		}
	})
}

func TestSetFileRefusesSectionInReservedSector(t *testing.T) {
	t.Parallel()
	cfg := []byte("[all]\n")
	gap := ImageSize - eraseSector + 8 - readOnlySize - len(fileSection(BootconfTxt, cfg)) - 8
	img := fuzzSkeleton(concat(fileSection(BootconfTxt, cfg), padSection(gap), fileSection("updatetime", make([]byte, 8))))
	im, err := Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if last := im.Sections()[len(im.Sections())-1]; last.Offset <= ImageSize-eraseSector {
		t.Fatalf("test image's last section at %d is not in the reserved sector", last.Offset)
	}
	if err := im.SetConfig([]byte("[all]\nBOOT_ORDER=0xf41\n")); err == nil || !strings.Contains(err.Error(), "reserved last 4 KiB") {
		t.Fatalf("SetConfig: err = %v", err)
	}
	if !bytes.Equal(im.Bytes(), img) {
		t.Fatal("refused SetConfig changed the image")
	}
}
