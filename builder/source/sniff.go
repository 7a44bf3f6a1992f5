package source

import (
	"bytes"
	"errors"
)

// Format is how the input is packed.
type Format int

// Formats recognised by their magic bytes.
const (
	Raw Format = iota + 1
	XZ
	Gzip
	Zstd
	Zip
)

func (f Format) String() string {
	switch f {
	case Raw:
		return "raw"
	case XZ:
		return "xz"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	case Zip:
		return "zip"
	}
	return "unknown"
}

// sniffLen is enough for every magic and for a GPT header at LBA 1.
const sniffLen = 1024

var (
	magicXZ    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicZip   = []byte{'P', 'K', 0x03, 0x04}
	magicZip0  = []byte{'P', 'K', 0x05, 0x06} // end of central directory first: empty zip
	magicBzip2 = []byte{'B', 'Z', 'h'}
	magic7z    = []byte{'7', 'z', 0xbc, 0xaf, 0x27, 0x1c}
	magicGPT   = []byte("EFI PART")
)

// sniff identifies the input by its first bytes, never by its name.
func sniff(head []byte) (Format, error) {
	switch {
	case bytes.HasPrefix(head, magicXZ):
		return XZ, nil
	case bytes.HasPrefix(head, magicGzip):
		return Gzip, nil
	case bytes.HasPrefix(head, magicZstd):
		return Zstd, nil
	case bytes.HasPrefix(head, magicZip):
		return Zip, nil
	case bytes.HasPrefix(head, magicZip0):
		return 0, errors.New("zip archive is empty: it must hold the .img file")
	case bytes.HasPrefix(head, magicBzip2):
		return 0, errors.New("bzip2 archives are not supported: decompress it with bunzip2 or use the .xz image")
	case bytes.HasPrefix(head, magic7z):
		return 0, errors.New("7-zip archives are not supported: extract the .img with 7z or use the .xz image")
	case looksLikeDisk(head):
		return Raw, nil
	}
	return 0, errors.New("not a disk image or known archive (expected a raw .img with an MBR or GPT, or xz, gzip, zstd, zip)")
}

// looksLikeDisk accepts an MBR boot signature at 510 or a GPT header at 512.
func looksLikeDisk(head []byte) bool {
	if len(head) >= 512 && head[510] == 0x55 && head[511] == 0xaa {
		return true
	}
	return len(head) >= 520 && bytes.Equal(head[512:520], magicGPT)
}
