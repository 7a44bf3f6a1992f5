package builder

import (
	"encoding/binary"
	"fmt"
	"io"
)

// ext4Allocated returns the byte ranges, from the start of r, of the blocks
// that the block bitmaps of the ext4 filesystem at [off, off+size) mark in
// use: the superblock and group descriptors, bitmaps, inode tables, the
// journal and every file's and directory's blocks, zeros or not. These
// are what ext4 and e2fsck may read; its free blocks never are. ok is false
// when the partition holds no ext4 this reads (no magic, meta_bg): then
// the caller keeps to the image's data ranges there. Groups whose bitmap
// is not initialized on disk (BLOCK_UNINIT) hold no allocated block outside
// their metadata, which the image's data ranges already cover.
func ext4Allocated(r io.ReaderAt, off, size int64) (ranges [][2]int64, ok bool, err error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, off+1024); err != nil {
		return nil, false, nil
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xef53 {
		return nil, false, nil
	}
	const (
		incompat64bit  = 0x80
		incompatMetaBG = 0x10
		roGDTCsum      = 0x10
		roMetadataCsum = 0x400
		bgBlockUninit  = 0x2
	)
	incompat, roCompat := le.Uint32(sb[0x60:]), le.Uint32(sb[0x64:])
	if incompat&incompatMetaBG != 0 {
		return nil, false, nil
	}
	logBlock := le.Uint32(sb[0x18:])
	if logBlock > 6 {
		return nil, false, fmt.Errorf("ext4 at byte %d: block size 2^%d KiB is implausible", off, logBlock)
	}
	blockSize := int64(1024) << logBlock
	blocks := int64(le.Uint32(sb[0x04:]))
	descSize := int64(32)
	if incompat&incompat64bit != 0 {
		blocks |= int64(le.Uint32(sb[0x150:])) << 32
		descSize = max(int64(le.Uint16(sb[0xfe:])), 32)
	}
	first := int64(le.Uint32(sb[0x14:]))
	perGroup := int64(le.Uint32(sb[0x20:]))
	if perGroup == 0 || perGroup > 8*blockSize || blocks*blockSize > size || first >= blocks {
		return nil, false, fmt.Errorf("ext4 at byte %d: inconsistent superblock (%d blocks of %d bytes, %d per group, in a %d-byte partition)", off, blocks, blockSize, perGroup, size)
	}
	groups := (blocks - first + perGroup - 1) / perGroup
	gdt := make([]byte, groups*descSize)
	if _, err := r.ReadAt(gdt, off+(first+1)*blockSize); err != nil {
		return nil, false, fmt.Errorf("ext4 at byte %d: read group descriptors: %w", off, err)
	}
	uninitValid := roCompat&(roGDTCsum|roMetadataCsum) != 0
	bitmap := make([]byte, perGroup/8)
	add := func(b int64) {
		start := off + b*blockSize
		if n := len(ranges); n > 0 && ranges[n-1][1] == start {
			ranges[n-1][1] = start + blockSize
			return
		}
		ranges = append(ranges, [2]int64{start, start + blockSize})
	}
	for g := range groups {
		d := gdt[g*descSize:]
		if uninitValid && le.Uint16(d[0x12:])&bgBlockUninit != 0 {
			continue
		}
		at := int64(le.Uint32(d[0:]))
		if descSize >= 64 {
			at |= int64(le.Uint32(d[0x20:])) << 32
		}
		if at <= 0 || at >= blocks {
			return nil, false, fmt.Errorf("ext4 at byte %d: group %d's block bitmap at block %d is outside the filesystem", off, g, at)
		}
		if _, err := r.ReadAt(bitmap, off+at*blockSize); err != nil {
			return nil, false, fmt.Errorf("ext4 at byte %d: read group %d's block bitmap: %w", off, g, err)
		}
		base := first + g*perGroup
		for i := range min(perGroup, blocks-base) {
			if bitmap[i/8]&(1<<(i%8)) != 0 {
				add(base + i)
			}
		}
	}
	// Block 0 holds the boot block and (with 4 KiB blocks) the superblock.
	if first > 0 {
		ranges = append([][2]int64{{off, off + first*blockSize}}, ranges...)
	}
	return ranges, true, nil
}
