package xzpar

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/ulikunitz/xz"
)

// chunkSize is how much decompressed data a worker hands to write at a time.
const chunkSize = 1 << 20

// WriteFunc stores p at offset off of the output. Decode calls it from
// several goroutines at once, always for disjoint ranges.
type WriteFunc func(off int64, p []byte) error

// Decode decodes every block of idx from r on workers goroutines and hands
// the output to write. done, when not nil, is called after each block
// (concurrently). The first error stops all workers and is returned.
func Decode(ctx context.Context, r io.ReaderAt, idx *Index, workers int, write WriteFunc, done func(Block)) error {
	if workers < 1 {
		workers = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	next := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunkSize)
			for i := range next {
				b := idx.Blocks[i]
				if err := decodeBlock(ctx, r, b, buf, write); err != nil {
					fail(fmt.Errorf("xz block %d (file offset %d): %w", b.Number, b.Offset, err))
					continue
				}
				if done != nil {
					done(b)
				}
			}
		}()
	}
feed:
	for i := range idx.Blocks {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// decodeBlock decodes one block by wrapping it in a minimal single-block
// stream (header, the block, a one-record index, footer), so the library
// checks the block's header, check value and sizes exactly as for a whole file.
func decodeBlock(ctx context.Context, r io.ReaderAt, b Block, buf []byte, write WriteFunc) error {
	stream := io.MultiReader(
		bytes.NewReader(streamHeader(b.StreamFlags)),
		io.NewSectionReader(r, b.Offset, b.PaddedSize()),
		bytes.NewReader(streamTail(b)),
	)
	xr, err := xz.ReaderConfig{SingleStream: true}.NewReader(bufio.NewReaderSize(stream, 128<<10))
	if err != nil {
		return err
	}
	off := b.ImageOffset
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := fill(xr, buf)
		if n > 0 {
			if off+int64(n) > b.ImageOffset+b.ImageSize {
				return errors.New("block holds more data than the index says")
			}
			if werr := write(off, buf[:n]); werr != nil {
				return werr
			}
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if off != b.ImageOffset+b.ImageSize {
		return fmt.Errorf("block decoded to %d bytes, the index says %d", off-b.ImageOffset, b.ImageSize)
	}
	return nil
}

// fill reads until buf is full or r fails; unlike io.ReadFull it passes a
// clean io.EOF through, so it stays distinct from a truncated block.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func streamHeader(flags [2]byte) []byte {
	h := append([]byte{}, headerMagic...)
	h = append(h, flags[:]...)
	return binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(flags[:]))
}

// streamTail is the index and footer of a stream holding only blocks, all
// of one stream's flags.
func streamTail(blocks ...Block) []byte {
	index := []byte{0x00}
	index = binary.AppendUvarint(index, uint64(len(blocks)))
	for _, b := range blocks {
		index = binary.AppendUvarint(index, uint64(b.UnpaddedSize))
		index = binary.AppendUvarint(index, uint64(b.ImageSize))
	}
	for len(index)%4 != 0 {
		index = append(index, 0)
	}
	index = binary.LittleEndian.AppendUint32(index, crc32.ChecksumIEEE(index))

	footer := binary.LittleEndian.AppendUint32(nil, uint32(len(index)/4-1))
	footer = append(footer, blocks[0].StreamFlags[:]...)
	tail := binary.LittleEndian.AppendUint32(index, crc32.ChecksumIEEE(footer))
	tail = append(tail, footer...)
	return append(tail, footerMagic...)
}

// StreamOf is the consecutive blocks of r (one stream's, in file order) as
// an xz stream of their own: a header, the blocks as they are in r, and an
// index and footer for just them. Any xz decoder decodes it to exactly
// those blocks' part of the image.
func StreamOf(r io.ReaderAt, blocks []Block) (io.Reader, error) {
	if len(blocks) == 0 {
		return nil, errors.New("no blocks")
	}
	var size int64
	for i, b := range blocks {
		if b.StreamFlags != blocks[0].StreamFlags || (i > 0 && b.Offset != blocks[i-1].Offset+blocks[i-1].PaddedSize()) {
			return nil, errors.New("blocks are not consecutive blocks of one stream")
		}
		size += b.PaddedSize()
	}
	return io.MultiReader(
		bytes.NewReader(streamHeader(blocks[0].StreamFlags)),
		io.NewSectionReader(r, blocks[0].Offset, size),
		bytes.NewReader(streamTail(blocks...)),
	), nil
}
