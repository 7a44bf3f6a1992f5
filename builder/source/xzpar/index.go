// Package xzpar decodes the blocks of a seekable xz file concurrently.
//
// xz -T (multi-threaded compression) splits the input into independent
// blocks and records their sizes in each stream's index at the end of the
// file. With the index read first, every block can be decoded on its own
// core and written straight to its offset in the output, so no ordering
// buffer is needed and memory stays at one dictionary per worker.
package xzpar

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	headerLen = 12 // stream header and stream footer are both 12 bytes
	// maxIndexSize bounds what a damaged footer can make us allocate; a
	// 2 GiB image in 24 MiB blocks has an index of well under 1 KiB.
	maxIndexSize = 16 << 20
)

var (
	headerMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	footerMagic = []byte{'Y', 'Z'}
)

// Block is one xz block as the index describes it.
type Block struct {
	Number       int     // 1-based, in file order across streams, as xz --list counts
	Offset       int64   // of the block header within the file
	UnpaddedSize int64   // block header + compressed data + check
	ImageOffset  int64   // of the block's first byte in the decompressed output
	ImageSize    int64   // decompressed size
	StreamFlags  [2]byte // flags of the stream the block belongs to (check type)
}

// PaddedSize is the block's size in the file, padded to a multiple of four.
func (b Block) PaddedSize() int64 { return (b.UnpaddedSize + 3) &^ 3 }

// Index lists the blocks of all streams of an xz file in file order.
type Index struct {
	Blocks    []Block
	Streams   int
	ImageSize int64 // total decompressed size
}

// ErrBadIndex means the file's tail is not a well-formed xz stream footer and
// index; a truncated or corrupt file gives this. Callers fall back to a
// sequential decoder, which reports where exactly the data goes wrong.
var ErrBadIndex = errors.New("xz index is missing or damaged")

func badIndex(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadIndex, fmt.Sprintf(format, args...))
}

// ReadIndex reads the indexes of all streams in r (size bytes), walking
// backwards from the end of the file across stream padding.
func ReadIndex(r io.ReaderAt, size int64) (*Index, error) {
	var streams [][]Block // last stream first
	pos := size
	word := make([]byte, 4)
	for pos > 0 {
		// Stream padding: multiples of four zero bytes between or after streams.
		for pos >= 4 {
			if _, err := r.ReadAt(word, pos-4); err != nil {
				return nil, fmt.Errorf("read xz padding: %w", err)
			}
			if !bytes.Equal(word, []byte{0, 0, 0, 0}) {
				break
			}
			pos -= 4
		}
		if pos == 0 {
			break
		}
		blocks, start, err := readStream(r, pos)
		if err != nil {
			return nil, err
		}
		streams = append(streams, blocks)
		pos = start
	}
	if len(streams) == 0 {
		return nil, badIndex("no xz stream found")
	}
	idx := &Index{Streams: len(streams)}
	for i := len(streams) - 1; i >= 0; i-- {
		for _, b := range streams[i] {
			b.ImageOffset = idx.ImageSize
			b.Number = len(idx.Blocks) + 1
			idx.ImageSize += b.ImageSize
			idx.Blocks = append(idx.Blocks, b)
		}
	}
	return idx, nil
}

// readStream parses the stream that ends at end and returns its blocks and
// the offset where the stream starts.
func readStream(r io.ReaderAt, end int64) ([]Block, int64, error) {
	if end < 2*headerLen {
		return nil, 0, badIndex("%d bytes are too short for an xz stream", end)
	}
	footer := make([]byte, headerLen)
	if _, err := r.ReadAt(footer, end-headerLen); err != nil {
		return nil, 0, fmt.Errorf("read xz stream footer: %w", err)
	}
	if !bytes.Equal(footer[10:], footerMagic) {
		return nil, 0, badIndex("no stream footer at offset %d", end-headerLen)
	}
	if crc32.ChecksumIEEE(footer[4:10]) != binary.LittleEndian.Uint32(footer[:4]) {
		return nil, 0, badIndex("stream footer CRC mismatch at offset %d", end-headerLen)
	}
	var flags [2]byte
	copy(flags[:], footer[8:10])
	indexSize := (int64(binary.LittleEndian.Uint32(footer[4:8])) + 1) * 4
	indexStart := end - headerLen - indexSize
	if indexSize > maxIndexSize || indexStart < headerLen {
		return nil, 0, badIndex("index size %d does not fit the file", indexSize)
	}
	index := make([]byte, indexSize)
	if _, err := r.ReadAt(index, indexStart); err != nil {
		return nil, 0, fmt.Errorf("read xz index: %w", err)
	}
	records, err := parseIndex(index)
	if err != nil {
		return nil, 0, err
	}
	var blocksSize int64
	for i := range records {
		records[i].StreamFlags = flags
		blocksSize += records[i].PaddedSize()
	}
	start := indexStart - blocksSize - headerLen
	if start < 0 {
		return nil, 0, badIndex("index describes %d bytes of blocks, more than the file holds", blocksSize)
	}
	header := make([]byte, headerLen)
	if _, err := r.ReadAt(header, start); err != nil {
		return nil, 0, fmt.Errorf("read xz stream header: %w", err)
	}
	if !bytes.Equal(header[:6], headerMagic) || crc32.ChecksumIEEE(header[6:8]) != binary.LittleEndian.Uint32(header[8:12]) {
		return nil, 0, badIndex("no stream header at offset %d", start)
	}
	if !bytes.Equal(header[6:8], flags[:]) {
		return nil, 0, badIndex("stream header and footer flags differ at offset %d", start)
	}
	off := start + headerLen
	for i := range records {
		records[i].Offset = off
		off += records[i].PaddedSize()
	}
	return records, start, nil
}

// parseIndex decodes an index field: indicator 0x00, record count, records
// (unpadded size, uncompressed size), zero padding, CRC32.
func parseIndex(index []byte) ([]Block, error) {
	body := index[:len(index)-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(index[len(index)-4:]) {
		return nil, badIndex("index CRC mismatch")
	}
	if body[0] != 0 {
		return nil, badIndex("index indicator is %#x, want 0", body[0])
	}
	rd := bytes.NewReader(body[1:])
	count, err := binary.ReadUvarint(rd)
	if err != nil || count > uint64(len(body))/2 {
		return nil, badIndex("bad index record count")
	}
	blocks := make([]Block, 0, count)
	for range count {
		unpadded, err1 := binary.ReadUvarint(rd)
		uncompressed, err2 := binary.ReadUvarint(rd)
		if err1 != nil || err2 != nil || unpadded < 5 || unpadded > 1<<62 || uncompressed > 1<<62 {
			return nil, badIndex("bad index record")
		}
		blocks = append(blocks, Block{UnpaddedSize: int64(unpadded), ImageSize: int64(uncompressed)})
	}
	for rd.Len() > 0 {
		if b, _ := rd.ReadByte(); b != 0 {
			return nil, badIndex("non-zero index padding")
		}
	}
	return blocks, nil
}
