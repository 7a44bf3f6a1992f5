package xzpar

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// sample is deterministic data that compresses somewhat: random bytes
// drawn from a small alphabet, with a zero run.
func sample(size int, seed byte) []byte {
	rng := rand.New(rand.NewChaCha8([32]byte{seed}))
	data := make([]byte, size)
	for i := range data[:size*3/4] {
		data[i] = "abcdefgh\n\x00\xff"[rng.IntN(11)]
	}
	return data
}

// xzCompress runs the real xz-utils.
func xzCompress(t *testing.T, data []byte, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("xz"); err != nil {
		t.Fatal("xz not found: apt-get install -y xz-utils")
	}
	cmd := exec.Command("xz", append([]string{"-c"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v", args, err)
	}
	return out
}

// xzBlocks asks xz-utils how many blocks and streams a file has.
func xzBlocks(t *testing.T, file []byte) (streams, blocks int) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.xz")
	if err := os.WriteFile(p, file, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("xz", "--robot", "--list", p).Output()
	if err != nil {
		t.Fatalf("xz --list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if f[0] == "file" && len(f) > 2 {
			streams, _ = strconv.Atoi(f[1])
			blocks, _ = strconv.Atoi(f[2])
		}
	}
	return streams, blocks
}

// decodeAll decodes file into memory through Decode.
func decodeAll(t *testing.T, file []byte, workers int) ([]byte, *Index, error) {
	t.Helper()
	r := bytes.NewReader(file)
	idx, err := ReadIndex(r, int64(len(file)))
	if err != nil {
		return nil, nil, err
	}
	out := make([]byte, idx.ImageSize)
	var mu sync.Mutex
	var doneBlocks int
	err = Decode(context.Background(), r, idx, workers, func(off int64, p []byte) error {
		copy(out[off:], p) // disjoint ranges: no lock needed
		return nil
	}, func(Block) { mu.Lock(); doneBlocks++; mu.Unlock() })
	if err == nil && doneBlocks != len(idx.Blocks) {
		t.Errorf("done called %d times for %d blocks", doneBlocks, len(idx.Blocks))
	}
	return out, idx, err
}

func TestDecodeMatchesXZUtils(t *testing.T) {
	t.Parallel()
	a, b := sample(3<<20+12345, 1), sample(2<<20, 2)
	multiBlock := xzCompress(t, a, "-T2", "-1", "--block-size=256KiB")
	other := xzCompress(t, b, "-T2", "-1", "--block-size=300000", "--check=sha256")
	tests := []struct {
		name                 string
		file, want           []byte
		wantStreams, workers int
	}{
		{"one block", xzCompress(t, a, "-1"), a, 1, 2},
		{"multi-block", multiBlock, a, 1, 2},
		{"multi-block 1 worker", multiBlock, a, 1, 1},
		{"multi-block many workers", multiBlock, a, 1, 5},
		{"crc32 check", xzCompress(t, a, "-T2", "-0", "--block-size=1MiB", "--check=crc32"), a, 1, 2},
		{"no check", xzCompress(t, b, "-T2", "-0", "--block-size=1MiB", "--check=none"), b, 1, 2},
		// Concatenated streams with stream padding between and after, as
		// `cat a.xz b.xz` and padding-aware tools produce.
		{"multi-stream with padding", bytes.Join([][]byte{multiBlock, other, {}}, make([]byte, 8)), append(bytes.Clone(a), b...), 2, 2},
		{"empty input", xzCompress(t, nil), nil, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, idx, err := decodeAll(t, tt.file, tt.workers)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("decoded %d bytes differ from the %d original bytes", len(got), len(tt.want))
			}
			streams, blocks := xzBlocks(t, tt.file)
			if idx.Streams != streams || len(idx.Blocks) != blocks || streams != tt.wantStreams {
				t.Fatalf("index: %d streams, %d blocks; xz --list says %d streams, %d blocks (want %d streams)",
					idx.Streams, len(idx.Blocks), streams, blocks, tt.wantStreams)
			}
		})
	}
}

func TestDamaged(t *testing.T) {
	t.Parallel()
	data := sample(2<<20, 3)
	file := xzCompress(t, data, "-T2", "-1", "--block-size=256KiB")

	t.Run("truncated has no index", func(t *testing.T) {
		for _, cut := range []int{len(file) - 1, len(file) - 13, len(file) / 2, 20} {
			_, err := ReadIndex(bytes.NewReader(file[:cut]), int64(cut))
			if !errors.Is(err, ErrBadIndex) {
				t.Errorf("cut at %d: err = %v, want ErrBadIndex", cut, err)
			}
		}
	})
	t.Run("index CRC", func(t *testing.T) {
		bad := bytes.Clone(file)
		bad[len(bad)-14] ^= 1 // last byte of the index CRC32
		if _, err := ReadIndex(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrBadIndex) {
			t.Fatalf("err = %v, want ErrBadIndex", err)
		}
	})
	t.Run("not xz", func(t *testing.T) {
		junk := bytes.Repeat([]byte("0123"), 100)
		if _, err := ReadIndex(bytes.NewReader(junk), int64(len(junk))); !errors.Is(err, ErrBadIndex) {
			t.Fatalf("err = %v, want ErrBadIndex", err)
		}
	})
	t.Run("corrupt block names it", func(t *testing.T) {
		bad := bytes.Clone(file)
		idx, err := ReadIndex(bytes.NewReader(bad), int64(len(bad)))
		if err != nil {
			t.Fatal(err)
		}
		b := idx.Blocks[3]
		for i := b.Offset + 40; i < b.Offset+80; i++ {
			bad[i] ^= 0xa5
		}
		_, _, err = decodeAll(t, bad, 2)
		if err == nil || !strings.Contains(err.Error(), "xz block 4 (file offset ") {
			t.Fatalf("err = %v, want an error naming block 4", err)
		}
	})
	t.Run("write error stops decoding", func(t *testing.T) {
		r := bytes.NewReader(file)
		idx, err := ReadIndex(r, int64(len(file)))
		if err != nil {
			t.Fatal(err)
		}
		full := errors.New("no space left on device")
		err = Decode(context.Background(), r, idx, 2, func(int64, []byte) error { return full }, nil)
		if !errors.Is(err, full) {
			t.Fatalf("err = %v, want the write error", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		r := bytes.NewReader(file)
		idx, err := ReadIndex(r, int64(len(file)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err = Decode(ctx, r, idx, 2, func(int64, []byte) error { return nil }, nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}
