package fatfs

import (
	"fmt"
	"io"
)

// AllocatedRanges returns the byte ranges, from the start of r, that the
// FAT32 filesystem at offset may read: the reserved sectors and the FATs,
// then every cluster the FAT marks in use (directories and file data
// alike, zeros or not). Writing these onto a card that holds old data gives
// the filesystem the image's; its free clusters are never read. Adjacent
// ranges are merged.
func AllocatedRanges(r io.ReaderAt, offset int64) ([][2]int64, error) {
	v, err := readVolume(r, offset)
	if err != nil {
		return nil, fmt.Errorf("FAT at byte %d: %w", offset, err)
	}
	out := [][2]int64{{offset, offset + v.dataStart}}
	for c := uint32(2); c < v.clusterCount+2; c++ {
		if v.fat[c]&fatMask == 0 {
			continue
		}
		start := v.clusterOffset(c)
		end := start + int64(v.bytesPerCluster)
		if last := &out[len(out)-1]; last[1] == start {
			last[1] = end
		} else {
			out = append(out, [2]int64{start, end})
		}
	}
	return out, nil
}
