// Package eeprom reads and changes the Raspberry Pi 4 (BCM2711) bootloader
// EEPROM image: its section chain, the modifiable files in it (bootconf.txt,
// bootconf.sig, pubkey.bin), and the .sig file that goes with a staged update.
// Images it writes are byte-identical to what Raspberry Pi's rpi-eeprom-config
// writes for the same input, so a config set here can be checked with their
// tools and vice versa. The package does no I/O except in Stage.
package eeprom

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// ImageSize is the size of every Pi 4 bootloader image.
	ImageSize = 512 * 1024
	// pi5ImageSize is the size of a Pi 5 (BCM2712) image, recognised only to
	// say that it is not supported.
	pi5ImageSize = 2 * 1024 * 1024
	// MaxImageSize bounds a file read as an image: the larger Pi 5 image,
	// read only to say that it is not supported.
	MaxImageSize = pi5ImageSize

	// MaxFileSize is the largest modifiable file rpi-eeprom-config accepts
	// (a 4 KiB erase sector less the header it counts).
	MaxFileSize = eraseSector - 20

	eraseSector    = 4096
	readOnlySize   = 64 * 1024 // bootcode and read-only files; never modified
	fileDataOffset = 24        // magic, length, name[12], 4 reserved bytes
	fileNameLen    = 12

	// Section magics. Every header magic matches magicMask.
	MagicBootcode = 0x55aaf00f
	MagicPadding  = 0x55aafeef
	MagicFile     = 0x55aaf11f
	magicMask     = 0xfffff00f

	// Names of the modifiable files nixpi reads or writes.
	BootconfTxt = "bootconf.txt"
	BootconfSig = "bootconf.sig"
	PubkeyBin   = "pubkey.bin"
)

// ErrTooLarge reports a file (a config) over MaxFileSize or without room in
// its section.
var ErrTooLarge = errors.New("too large for the EEPROM image")

// ErrNotSupported reports an image nixpi recognises but cannot edit (Pi 5).
var ErrNotSupported = errors.New("not supported")

// Section is one entry of the image's section chain.
type Section struct {
	Magic  uint32
	Offset int // of the 8-byte header
	Length int // bytes after the header
	Name   string
}

// IsFile reports whether the section is a named modifiable file.
func (s Section) IsFile() bool { return s.Magic == MagicFile }

// data returns the file section's payload range [start, end).
func (s Section) data() (start, end int) {
	return s.Offset + fileDataOffset, s.Offset + 8 + s.Length
}

// Image is a parsed Pi 4 bootloader image. The zero value is not usable; get
// one from Parse.
type Image struct {
	buf      []byte
	sections []Section
}

// Parse checks data is a Pi 4 bootloader image with an intact section chain
// and a bootconf.txt, and returns an Image holding its own copy of data.
func Parse(data []byte) (*Image, error) {
	switch len(data) {
	case ImageSize:
	case pi5ImageSize:
		return nil, fmt.Errorf("2 MiB image: Raspberry Pi 5 (BCM2712) bootloader images are %w yet; use a Pi 4 image (pieeprom-*.bin from bootloader-2711)", ErrNotSupported)
	default:
		return nil, fmt.Errorf("image is %d bytes, a Pi 4 bootloader image is exactly %d: use an unmodified pieeprom-*.bin from /lib/firmware/raspberrypi/bootloader-2711", len(data), ImageSize)
	}
	im := &Image{buf: bytes.Clone(data)}
	secs, err := parseChain(im.buf)
	if err != nil {
		return nil, err
	}
	im.sections = secs
	if _, err := im.fileIndex(BootconfTxt); err != nil {
		return nil, err
	}
	return im, nil
}

// parseChain walks the section chain from offset 0 until an erased (0xff) or
// zero header.
func parseChain(buf []byte) ([]Section, error) {
	var secs []Section
	for off := 0; off < len(buf); {
		if off+8 > len(buf) {
			return nil, fmt.Errorf("broken section chain: header at offset %d runs past the end of the image", off)
		}
		magic := binary.BigEndian.Uint32(buf[off:])
		length32 := binary.BigEndian.Uint32(buf[off+4:])
		if magic == 0 || magic == 0xffffffff {
			break
		}
		if magic&magicMask != MagicBootcode {
			return nil, fmt.Errorf("broken section chain: bad magic 0x%08x at offset %d: the image is corrupt or not a Pi 4 bootloader", magic, off)
		}
		// In 64 bits, so a huge length cannot wrap on 32-bit ARM.
		if uint64(off)+8+uint64(length32) > uint64(len(buf)) {
			return nil, fmt.Errorf("broken section chain: section at offset %d with length %d runs past the end of the image", off, length32)
		}
		length := int(length32)
		end := off + 8 + length
		s := Section{Magic: magic, Offset: off, Length: length}
		if magic == MagicFile {
			if length < fileDataOffset-8 {
				return nil, fmt.Errorf("broken section chain: file section at offset %d is %d bytes, shorter than its name", off, length)
			}
			s.Name = string(bytes.ReplaceAll(buf[off+8:off+8+fileNameLen], []byte{0}, nil))
		}
		secs = append(secs, s)
		off = align8(end)
	}
	return secs, nil
}

func align8(n int) int { return (n + 7) &^ 7 }

// Sections returns a copy of the section chain.
func (im *Image) Sections() []Section { return append([]Section(nil), im.sections...) }

// Bytes returns a copy of the image.
func (im *Image) Bytes() []byte { return bytes.Clone(im.buf) }

// fileIndex finds the modifiable file name: the first file section of that
// name outside the read-only first 64 KiB (where rpi-eeprom-config never
// writes either).
func (im *Image) fileIndex(name string) (int, error) {
	for i, s := range im.sections {
		if s.IsFile() && s.Name == name && s.Offset >= readOnlySize {
			return i, nil
		}
	}
	if name == BootconfTxt {
		return -1, fmt.Errorf("image has no %s section: it is corrupt or not a Pi 4 bootloader image", name)
	}
	return -1, fmt.Errorf("image has no %s section: this bootloader release predates it (signed boot needs one from 2021-05 or later); use a newer pieeprom-*.bin", name)
}

// File returns a copy of the modifiable file name.
func (im *Image) File(name string) ([]byte, error) {
	i, err := im.fileIndex(name)
	if err != nil {
		return nil, err
	}
	start, end := im.sections[i].data()
	return bytes.Clone(im.buf[start:end]), nil
}

// Config returns bootconf.txt byte for byte.
func (im *Image) Config() []byte {
	cfg, err := im.File(BootconfTxt)
	if err != nil {
		panic("eeprom: parsed image lost its bootconf.txt: " + err.Error())
	}
	return cfg
}

// SetConfig replaces bootconf.txt. On error the image is unchanged.
func (im *Image) SetConfig(cfg []byte) error { return im.SetFile(BootconfTxt, cfg) }

// SetSignature replaces bootconf.sig with sig (the output of
// rpi-eeprom-digest -k for the config) and pubkey.bin with the RSA-2048
// public key in pubkeyPEM, as signed boot needs them together. On error the
// image is unchanged.
func (im *Image) SetSignature(sig, pubkeyPEM []byte) error {
	key, err := PublicKeyBin(pubkeyPEM)
	if err != nil {
		return err
	}
	next := im.clone()
	if err := next.SetFile(BootconfSig, sig); err != nil {
		return err
	}
	if err := next.SetFile(PubkeyBin, key); err != nil {
		return err
	}
	*im = *next
	return nil
}

func (im *Image) clone() *Image {
	return &Image{buf: bytes.Clone(im.buf), sections: im.Sections()}
}

// SetFile replaces the modifiable file name with data. Bytes the old file used
// beyond the new one are erased (0xff); a file followed by other sections gets
// a padding section up to the next one, exactly as rpi-eeprom-config does. The
// bootcode, other sections and the last 4 KiB are never touched. On error the
// image is unchanged.
func (im *Image) SetFile(name string, data []byte) error {
	if len(data) > MaxFileSize {
		return fmt.Errorf("%s is %d bytes, at most %d fit (%w): remove comments or unused settings", name, len(data), MaxFileSize, ErrTooLarge)
	}
	i, err := im.fileIndex(name)
	if err != nil {
		return err
	}
	hdr := im.sections[i].Offset
	isLast := i == len(im.sections)-1
	limit := len(im.buf) - eraseSector // the bootloader's scratch sector
	next := limit
	nextIdx := len(im.sections)
	for j := i + 1; j < len(im.sections); j++ {
		if im.sections[j].Magic != MagicPadding {
			next, nextIdx = im.sections[j].Offset, j
			break
		}
	}
	if next > limit {
		return fmt.Errorf("section at offset %d lies in the reserved last 4 KiB: the image is corrupt; use an unmodified pieeprom-*.bin", next)
	}
	// rpi-eeprom-config checks room for the data plus 20 bytes, though the
	// data starts 24 bytes into the section; checking the true end refuses
	// only what it would write over the next header or the reserved sector.
	end := hdr + fileDataOffset + len(data)
	if end > limit {
		return fmt.Errorf("%s of %d bytes at offset %d would reach the reserved last 4 KiB (%w, room for %d bytes): shorten it", name, len(data), hdr, ErrTooLarge, limit-hdr-fileDataOffset)
	}
	if end > next {
		return fmt.Errorf("%s of %d bytes does not fit before the next section at offset %d (%w, room for %d bytes): shorten it", name, len(data), next, ErrTooLarge, next-hdr-fileDataOffset)
	}

	length := len(data) + fileDataOffset - 8
	binary.BigEndian.PutUint32(im.buf[hdr+4:], uint32(length))
	copy(im.buf[hdr+fileDataOffset:], data)
	fill := align8(end)
	erase(im.buf[end:fill])
	secs := append([]Section(nil), im.sections[:i+1]...)
	secs[i].Length = length
	// A gap of at least a header before a following section becomes an
	// explicit padding section, so the chain stays walkable; after the last
	// section the erased bytes end the chain by themselves.
	if gap := next - fill; gap >= 8 && !isLast {
		binary.BigEndian.PutUint32(im.buf[fill:], MagicPadding)
		binary.BigEndian.PutUint32(im.buf[fill+4:], uint32(gap-8))
		secs = append(secs, Section{Magic: MagicPadding, Offset: fill, Length: gap - 8})
		fill += 8
	}
	erase(im.buf[fill:next])
	im.sections = append(secs, im.sections[nextIdx:]...)
	return nil
}

func erase(b []byte) {
	for i := range b {
		b[i] = 0xff
	}
}

// BuildTimestamp returns the bootloader's build time (BUILD_TIMESTAMP=, Unix
// seconds), which is what `vcgencmd bootloader_version` reports as timestamp.
func (im *Image) BuildTimestamp() (int64, bool) {
	return buildTimestamp(im.buf)
}

func buildTimestamp(buf []byte) (int64, bool) {
	key := []byte("BUILD_TIMESTAMP=")
	i := bytes.Index(buf, key)
	if i < 0 {
		return 0, false
	}
	var ts int64
	n := 0
	for _, c := range buf[i+len(key):] {
		if c < '0' || c > '9' || n == 19 {
			break
		}
		ts = ts*10 + int64(c-'0')
		n++
	}
	return ts, n > 0
}
