package builder

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/builder/source"
)

// BmapBlockSize is the block size of the .bmap nixpi writes (bmaptool's).
const BmapBlockSize = 4096

// Range is a byte range [Start, End) of an image or card.
type Range struct{ Start, End int64 }

// MappedRange is a range to write, with the sha256 of the image's bytes
// there when known (hex; empty when not).
type MappedRange struct {
	Range
	SHA256 string
}

// MappedRanges returns the blocks of the image f (size bytes) that a card
// must receive, as sorted, merged byte ranges aligned to BmapBlockSize
// (the last may end at size). The rule: every block that holds a non-zero
// byte, plus every block a filesystem may read even when it is zero, so
// that the card is right over old data too: the MBR, the FAT partition's
// reserved sectors, FATs and allocated clusters, and the ext4 partition's
// blocks its bitmaps mark in use (metadata, journal, file data). A block
// left out is one no filesystem reads: free space, or a gap between
// partitions that is zero in the image.
func MappedRanges(f *os.File, size int64) ([]Range, error) {
	data, err := DataRanges(f, size)
	if err != nil {
		return nil, err
	}
	return MapImage(f, f.Name(), size, data, true)
}

// DataRanges is where f's first size bytes hold data, not holes.
func DataRanges(f *os.File, size int64) ([]Range, error) {
	var data []Range
	err := source.WalkData(f, 0, size, func(start, end int64) error {
		data = append(data, Range{start, end})
		return nil
	})
	return data, err
}

// MapImage is the mapped ranges of the image named name, read through r,
// whose bytes outside the data ranges (sorted) are holes: MappedRanges'
// rule, and without skipZeros every data range whole, zero blocks and all
// (what flash writes without a bmap: an image that is not nixpi's may hold
// a filesystem it cannot read).
func MapImage(r io.ReaderAt, name string, size int64, data []Range, skipZeros bool) ([]Range, error) {
	var found []Range
	add := func(start, end int64) {
		start = start / BmapBlockSize * BmapBlockSize
		end = min((end+BmapBlockSize-1)/BmapBlockSize*BmapBlockSize, size)
		if start < end {
			found = append(found, Range{start, end})
		}
	}
	buf := make([]byte, 1<<20)
	for _, d := range data {
		if !skipZeros {
			add(d.Start, d.End)
			continue
		}
		for off := d.Start / BmapBlockSize * BmapBlockSize; off < d.End; off += int64(len(buf)) {
			n := min(int64(len(buf)), d.End-off)
			if _, err := r.ReadAt(buf[:n], off); err != nil {
				return nil, fmt.Errorf("read %q at byte %d: %w", name, off, err)
			}
			for i := int64(0); i < n; i += BmapBlockSize {
				if !isZeroBlock(buf[i:min(i+BmapBlockSize, n)]) {
					add(off+i, off+i+BmapBlockSize)
				}
			}
		}
	}
	needed, err := FilesystemRanges(r, name, size)
	if err != nil {
		return nil, err
	}
	for _, n := range needed {
		add(n.Start, n.End)
	}
	return MergeRanges(found), nil
}

// NeededRange is a range of an image that a card's partition table or
// one of its filesystems is read from, zero or not, and what reads it.
type NeededRange struct {
	Range
	What string
}

// FilesystemRanges is the part of MappedRanges' rule that does not look
// at the image's bytes as data: the MBR, and of every partition of an MBR
// table that the image holds whole, the FAT's reserved sectors, FATs and
// allocated clusters, or the blocks the ext4 bitmaps mark in use. A card
// lacking any of them reads whatever the card held before there.
func FilesystemRanges(r io.ReaderAt, name string, size int64) ([]NeededRange, error) {
	needed := []NeededRange{{Range{0, min(512, size)}, "the partition table"}}
	t, err := baseimage.ReadTable(r)
	if err != nil || t.GPT {
		return needed, nil
	}
	for _, p := range t.Partitions {
		if p.End() > size {
			continue // not ours to judge: nothing of it is on the image
		}
		var rs [][2]int64
		what := fmt.Sprintf("partition %d's FAT", p.Index)
		switch {
		case baseimage.IsFAT(p.Type):
			if rs, err = fatfs.AllocatedRanges(r, p.Start); err != nil {
				return nil, fmt.Errorf("map %q: partition %d: %w", name, p.Index, err)
			}
		default:
			what = fmt.Sprintf("partition %d's ext4", p.Index)
			if rs, _, err = ext4Allocated(r, p.Start, p.Size); err != nil {
				return nil, fmt.Errorf("map %q: partition %d: %w", name, p.Index, err)
			}
		}
		for _, r := range rs {
			if end := min(r[1], p.End()); r[0] < end {
				needed = append(needed, NeededRange{Range{r[0], end}, what})
			}
		}
	}
	return needed, nil
}

func isZeroBlock(p []byte) bool { return len(p) == 0 || p[0] == 0 && bytes.Equal(p[1:], p[:len(p)-1]) }

// MergeRanges sorts rs and merges the ones that overlap or touch.
func MergeRanges(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int { return int(min(max(a.Start-b.Start, -1), 1)) })
	var out []Range
	for _, r := range rs {
		if n := len(out); n > 0 && r.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, r.End)
			continue
		}
		out = append(out, r)
	}
	return out
}

// EncodeBmap writes the bmap (format 2.0, sha256, as bmaptool create
// writes it) of the image f of size bytes with the given mapped ranges,
// hashing each range. The same image gives the same bytes.
func EncodeBmap(f *os.File, size int64, mapped []Range) ([]byte, error) {
	blocks := (size + BmapBlockSize - 1) / BmapBlockSize
	var mappedBlocks int64
	var body strings.Builder
	buf := make([]byte, 1<<20)
	for _, r := range mapped {
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, r.Start, r.End-r.Start), buf); err != nil {
			return nil, fmt.Errorf("hash %q: %w", f.Name(), err)
		}
		first, last := r.Start/BmapBlockSize, (r.End-1)/BmapBlockSize
		mappedBlocks += last - first + 1
		span := strconv.FormatInt(first, 10)
		if last != first {
			span += "-" + strconv.FormatInt(last, 10)
		}
		fmt.Fprintf(&body, "        <Range chksum=\"%x\"> %s </Range>\n", h.Sum(nil), span)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" ?>
<!-- This file contains the block map for an image file: the blocks that
     have to be copied to the target device (boot sector, partition table,
     file-system metadata, files, directories). Written by nixpi build;
     bmaptool copy reads it. -->

<bmap version="2.0">
    <!-- Image size in bytes: %s -->
    <ImageSize> %d </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> %d </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> %d </BlocksCount>

    <!-- Count of mapped blocks: %s or %.1f%% -->
    <MappedBlocksCount> %d </MappedBlocksCount>

    <!-- Type of checksum used in this file -->
    <ChecksumType> sha256 </ChecksumType>

    <!-- The checksum of this bmap file. When it is calculated, the value of
         the checksum has be zero (all ASCII "0" symbols).  -->
    <BmapFileChecksum> %s </BmapFileChecksum>

    <!-- The block map which consists of elements which may either be a
         range of blocks or a single block. The 'chksum' attribute
         (if present) is the checksum of this blocks range. -->
    <BlockMap>
%s    </BlockMap>
</bmap>
`, humanSize(size), size, BmapBlockSize, blocks, humanSize(mappedBlocks*BmapBlockSize),
		float64(mappedBlocks)*100/float64(max(blocks, 1)), mappedBlocks, zeroSum, body.String())
	sum := sha256.Sum256(b.Bytes())
	return bytes.Replace(b.Bytes(), []byte(zeroSum), []byte(hex.EncodeToString(sum[:])), 1), nil
}

// zeroSum stands for the bmap's own checksum while it is computed.
var zeroSum = strings.Repeat("0", sha256.Size*2)

// humanSize is bmaptool's human_size, for the comments.
func humanSize(n int64) string {
	if n < 512 {
		return fmt.Sprintf("%d bytes", n)
	}
	v := float64(n)
	for _, unit := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if v /= 1024; v < 1024 {
			return fmt.Sprintf("%.1f %s", v, unit)
		}
	}
	return fmt.Sprintf("%.1f EiB", v/1024)
}

// bmapXML is what nixpi reads of a bmap.
type bmapXML struct {
	Version      string `xml:"version,attr"`
	ImageSize    string `xml:"ImageSize"`
	BlockSize    string `xml:"BlockSize"`
	ChecksumType string `xml:"ChecksumType"`
	FileChecksum string `xml:"BmapFileChecksum"`
	Ranges       []struct {
		Chksum string `xml:"chksum,attr"`
		Span   string `xml:",chardata"`
	} `xml:"BlockMap>Range"`
}

// ReadBmap reads the bmap at path for an image of imageSize bytes: its own
// checksum is checked, and its ranges must be sorted, apart and inside the
// image. Only bmap 2.x with sha256 (what bmaptool and nixpi write) is read.
func ReadBmap(path string, imageSize int64) ([]MappedRange, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read bmap: %w", err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("bmap %q: %s (remove it to write the image's data ranges, or recreate it with bmaptool create)", path, fmt.Sprintf(format, args...))
	}
	var x bmapXML
	if err := xml.Unmarshal(raw, &x); err != nil {
		return nil, bad("not a bmap: %v", err)
	}
	if !strings.HasPrefix(x.Version, "2.") || strings.TrimSpace(x.ChecksumType) != "sha256" {
		return nil, bad("version %q with checksum %q; nixpi reads bmap 2.x with sha256", x.Version, strings.TrimSpace(x.ChecksumType))
	}
	want := strings.TrimSpace(x.FileChecksum)
	if len(want) != sha256.Size*2 || bytes.Count(raw, []byte(want)) != 1 {
		return nil, bad("BmapFileChecksum %q is not one sha256", want)
	}
	got := sha256.Sum256(bytes.Replace(raw, []byte(want), []byte(zeroSum), 1))
	if hex.EncodeToString(got[:]) != want {
		return nil, bad("damaged: its sha256 is %x, BmapFileChecksum says %s", got, want)
	}
	size, err1 := strconv.ParseInt(strings.TrimSpace(x.ImageSize), 10, 64)
	block, err2 := strconv.ParseInt(strings.TrimSpace(x.BlockSize), 10, 64)
	if err1 != nil || err2 != nil || block <= 0 || block%512 != 0 {
		return nil, bad("ImageSize %q, BlockSize %q", x.ImageSize, x.BlockSize)
	}
	if size != imageSize {
		return nil, bad("it is for a %d-byte image, this image is %d bytes", size, imageSize)
	}
	var out []MappedRange
	for _, r := range x.Ranges {
		a, b, found := strings.Cut(strings.TrimSpace(r.Span), "-")
		if !found {
			b = a
		}
		first, e1 := strconv.ParseInt(a, 10, 64)
		last, e2 := strconv.ParseInt(b, 10, 64)
		if e1 != nil || e2 != nil || first < 0 || last < first || last*block >= size {
			return nil, bad("range %q is not inside the image", r.Span)
		}
		m := MappedRange{Range{first * block, min((last+1)*block, size)}, r.Chksum}
		if n := len(out); n > 0 && m.Start < out[n-1].End {
			return nil, bad("range %q overlaps or precedes the one before it", r.Span)
		}
		out = append(out, m)
	}
	return out, nil
}

// bmapOf is the bmap of the image at path.
func bmapOf(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("map %q: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("map %q: %w", path, err)
	}
	mapped, err := MappedRanges(f, st.Size())
	if err != nil {
		return nil, err
	}
	return EncodeBmap(f, st.Size(), mapped)
}
