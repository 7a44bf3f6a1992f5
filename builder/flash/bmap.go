package flash

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"

	"github.com/nixpi/nixpi/builder"
)

// flashRanges is what to write: the ranges of the bmap when there is
// one (refused unless they cover what the card's partition table and
// filesystems are read from), else every range of the image that is not a hole, and the blocks
// its FAT and ext4 filesystems may read though they are holes in the
// image (builder.MappedRanges' rule, without skipping zero data).
func flashRanges(img *os.File, bmap string, size int64) ([]builder.MappedRange, bool, error) {
	if bmap != "" {
		ranges, err := builder.ReadBmap(bmap, size)
		if err == nil {
			if err := checkBmapCovers(img, img.Name(), bmap, size, ranges); err != nil {
				return nil, false, err
			}
			return ranges, true, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, false, err
		}
	}
	data, err := builder.DataRanges(img, size)
	if err != nil {
		return nil, false, err
	}
	rs, err := builder.MapImage(img, img.Name(), size, data, false)
	if err != nil {
		return nil, false, err
	}
	ranges := make([]builder.MappedRange, len(rs))
	for i, r := range rs {
		ranges[i] = builder.MappedRange{Range: r}
	}
	return ranges, false, nil
}

// checkBmapCovers refuses a bmap of the image r (named image) that leaves out bytes its
// partition table or filesystems are read from (builder.FilesystemRanges): flashed
// from it, a card would hold the old card's bytes there, a card without a
// boot partition from a bmap of the MBR only, and its read-back would still
// pass, since it checks only what the bmap maps.
func checkBmapCovers(r io.ReaderAt, image, bmap string, size int64, ranges []builder.MappedRange) error {
	needed, err := builder.FilesystemRanges(r, image, size)
	if err != nil {
		return err
	}
	for _, n := range needed {
		if gap, ok := firstGap(n.Range, ranges); ok {
			return fmt.Errorf("bmap %q does not map bytes %d-%d, which %s is read from: a card flashed from it would keep the old card's bytes there (a bmap of the MBR only gives a card with no boot partition); rebuild the image with nixpi build, which writes a complete .bmap, or remove %q to flash the image's data ranges",
				bmap, gap.Start, gap.End, n.What, bmap)
		}
	}
	return nil
}

// firstGap is the first part of need that no range of have (sorted,
// apart) covers.
func firstGap(need builder.Range, have []builder.MappedRange) (builder.Range, bool) {
	pos := need.Start
	i := sort.Search(len(have), func(i int) bool { return have[i].End > pos })
	for ; i < len(have) && pos < need.End; i++ {
		if have[i].Start > pos {
			return builder.Range{Start: pos, End: min(have[i].Start, need.End)}, true
		}
		pos = have[i].End
	}
	if pos < need.End {
		return builder.Range{Start: pos, End: need.End}, true
	}
	return builder.Range{}, false
}
