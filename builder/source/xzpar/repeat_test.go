package xzpar

import (
	"bytes"
	"fmt"
	"os/exec"
	"testing"
)

// blocksImage is n 64 KiB blocks: data where kinds[i] is 'd' (each its
// own), 'D' (the same data every time), '0' (zeros).
func blocksImage(kinds string) []byte {
	const blockSize = 64 << 10
	var img []byte
	same := sample(blockSize, 99)
	for i, k := range kinds {
		switch k {
		case 'd':
			img = append(img, sample(blockSize, byte(i))...)
		case 'D':
			img = append(img, same...)
		case '0':
			img = append(img, make([]byte, blockSize)...)
		}
	}
	return img
}

func TestRepeats(t *testing.T) {
	t.Parallel()
	img := blocksImage("d00dD0D00d")
	for _, check := range []string{"crc32", "crc64", "sha256", "none"} {
		t.Run(check, func(t *testing.T) {
			t.Parallel()
			file := xzCompress(t, img, "-T2", "-1", "--block-size=64KiB", "--check="+check)
			r := bytes.NewReader(file)
			idx, err := ReadIndex(r, int64(len(file)))
			if err != nil {
				t.Fatal(err)
			}
			if len(idx.Blocks) != 10 {
				t.Fatalf("%d blocks, want 10", len(idx.Blocks))
			}
			got, err := Repeats(r, idx)
			if err != nil {
				t.Fatal(err)
			}
			// Zero blocks 2, 5, 7, 8 repeat block 1; the repeated data
			// (blocks 4 and 6) is no block of zeros and is decoded.
			want := map[int]int{2: 1, 5: 1, 7: 1, 8: 1}
			if check == "none" {
				want = map[int]int{} // nothing tells what a block holds
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Repeats = %v, want %v", got, want)
			}
		})
	}
}

func TestStreamOf(t *testing.T) {
	t.Parallel()
	img := blocksImage("d0dd0d")
	file := xzCompress(t, img, "-T2", "-1", "--block-size=64KiB")
	r := bytes.NewReader(file)
	idx, err := ReadIndex(r, int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	run := idx.Blocks[2:5]
	stream, err := StreamOf(r, run)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("xz", "--decompress", "--stdout")
	cmd.Stdin = stream
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz on the stream of blocks 3-5: %v", err)
	}
	if want := img[run[0].ImageOffset : run[2].ImageOffset+run[2].ImageSize]; !bytes.Equal(out, want) {
		t.Fatalf("blocks 3-5 decoded to %d bytes that differ from the image's %d", len(out), len(want))
	}
	if run[0].Number != 3 {
		t.Errorf("block number %d, want 3", run[0].Number)
	}
	if _, err := StreamOf(r, []Block{idx.Blocks[1], idx.Blocks[3]}); err == nil {
		t.Error("StreamOf accepted blocks that are not consecutive")
	}
}
