package xzpar

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"hash/crc64"
	"io"
)

// Check types of the stream flags (xz file format 2.1.1.2).
const (
	checkCRC32  = 0x01
	checkCRC64  = 0x04
	checkSHA256 = 0x0a
)

// maxZeroRatio bounds how well a block must compress to be looked at as a
// block of zeros: LZMA2 packs 24 MiB of zeros into under 4 KiB.
const maxZeroRatio = 256

// Repeats finds the blocks that are byte for byte a copy of an earlier block
// whose check value is that of all zeros, as the free space of a disk image
// compresses to. Blocks are independent, so equal bytes decode to equal
// output: once the earlier block has been decoded, and found to be zeros,
// its copies need no decoding. The result maps a repeating block's index to
// the index of the first block with the same bytes.
//
// A check value can collide; the caller makes sure that the first block
// really decoded to zeros before it leaves the copies undecoded.
func Repeats(r io.ReaderAt, idx *Index) (map[int]int, error) {
	type key struct {
		unpadded, image int64
		flags           [2]byte
	}
	first := map[key]int{} // the first zero-looking block of each shape
	zeroCheck := map[key][]byte{}
	repeats := map[int]int{}
	var firstBytes, these []byte
	for i, b := range idx.Blocks {
		if b.UnpaddedSize*maxZeroRatio > b.ImageSize {
			continue
		}
		k := key{b.UnpaddedSize, b.ImageSize, b.StreamFlags}
		want, ok := zeroCheck[k]
		if !ok {
			want = checkOfZeros(b.StreamFlags[1]&0x0f, b.ImageSize)
			zeroCheck[k] = want
		}
		if want == nil {
			continue // no check value, or an unknown kind
		}
		var err error
		if these, err = appendBlock(these[:0], r, b); err != nil {
			return nil, err
		}
		if !bytes.HasSuffix(these, want) {
			continue
		}
		j, seen := first[k]
		if !seen {
			first[k] = i
			continue
		}
		if firstBytes, err = appendBlock(firstBytes[:0], r, idx.Blocks[j]); err != nil {
			return nil, err
		}
		if bytes.Equal(these, firstBytes) {
			repeats[i] = j
		}
	}
	return repeats, nil
}

// appendBlock appends block b's bytes, which end with its check value, to
// buf.
func appendBlock(buf []byte, r io.ReaderAt, b Block) ([]byte, error) {
	n := int(b.PaddedSize())
	buf = append(buf, make([]byte, n)...)
	if _, err := r.ReadAt(buf[len(buf)-n:], b.Offset); err != nil {
		return nil, err
	}
	return buf, nil
}

// checkOfZeros is the check value xz stores for size zero bytes, or nil
// for a check kind that cannot tell.
func checkOfZeros(kind byte, size int64) []byte {
	zeros := make([]byte, 1<<20)
	feed := func(w io.Writer) {
		for n := size; n > 0; n -= int64(len(zeros)) {
			w.Write(zeros[:min(n, int64(len(zeros)))])
		}
	}
	switch kind {
	case checkCRC32:
		h := crc32.NewIEEE()
		feed(h)
		return binary.LittleEndian.AppendUint32(nil, h.Sum32())
	case checkCRC64:
		h := crc64.New(crc64.MakeTable(crc64.ECMA))
		feed(h)
		return binary.LittleEndian.AppendUint64(nil, h.Sum64())
	case checkSHA256:
		h := sha256.New()
		feed(h)
		return h.Sum(nil)
	}
	return nil
}
