package fatfs

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// bootSector is what the fixups need from a FAT32 boot sector.
type bootSector struct {
	bytesPerSector    int
	sectorsPerCluster int
	reservedSectors   int
	numFATs           int
	totalSectors      int64
	sectorsPerFAT     int64
	rootCluster       uint32
	fsInfoSector      int
	backupBootSector  int
}

func parseBootSector(b []byte) (*bootSector, error) {
	if len(b) < 512 || b[510] != 0x55 || b[511] != 0xaa {
		return nil, fmt.Errorf("no FAT boot sector (signature 55 aa missing)")
	}
	le := binary.LittleEndian
	bs := &bootSector{
		bytesPerSector:    int(le.Uint16(b[11:13])),
		sectorsPerCluster: int(b[13]),
		reservedSectors:   int(le.Uint16(b[14:16])),
		numFATs:           int(b[16]),
		totalSectors:      int64(le.Uint16(b[19:21])),
		sectorsPerFAT:     int64(le.Uint16(b[22:24])),
	}
	if bs.totalSectors == 0 {
		bs.totalSectors = int64(le.Uint32(b[32:36]))
	}
	switch {
	case string(b[3:11]) == "EXFAT   ":
		return nil, fmt.Errorf("exFAT, not FAT32 (exFAT boot partitions are not supported: the Pi's firmware boots from FAT32)")
	case bs.sectorsPerFAT != 0 || string(b[82:87]) != "FAT32":
		return nil, fmt.Errorf("not FAT32 (FAT12/16 boot partitions are not supported)")
	}
	bs.sectorsPerFAT = int64(le.Uint32(b[36:40]))
	bs.rootCluster = le.Uint32(b[44:48])
	bs.fsInfoSector = int(le.Uint16(b[48:50]))
	bs.backupBootSector = int(le.Uint16(b[50:52]))
	switch bs.bytesPerSector {
	case 512, 1024, 2048, 4096:
	default:
		return nil, fmt.Errorf("bad bytes per sector %d", bs.bytesPerSector)
	}
	if bs.sectorsPerCluster == 0 || bs.sectorsPerCluster&(bs.sectorsPerCluster-1) != 0 {
		return nil, fmt.Errorf("bad sectors per cluster %d", bs.sectorsPerCluster)
	}
	if bs.numFATs < 1 || bs.reservedSectors < 1 || bs.sectorsPerFAT == 0 || bs.rootCluster < 2 {
		return nil, fmt.Errorf("inconsistent boot sector")
	}
	return bs, nil
}

// volume is a raw view of a FAT32 filesystem: its boot sector values and
// the first FAT, for the fixups go-diskfs does not do.
type volume struct {
	bootSector
	r               io.ReaderAt
	offset          int64 // partition start in the image
	bytesPerCluster int
	dataStart       int64  // byte offset of cluster 2, from the partition start
	clusterCount    uint32 // data clusters; valid cluster numbers are 2..clusterCount+1
	fat             []uint32
}

const (
	fatMask    = 0x0fffffff
	fatEOC     = 0x0ffffff8 // this and above: end of chain
	fatBad     = 0x0ffffff7
	fatEOCMark = 0x0fffffff
)

func readVolume(r io.ReaderAt, offset int64) (*volume, error) {
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, offset); err != nil {
		return nil, fmt.Errorf("read boot sector: %w", err)
	}
	bs, err := parseBootSector(b)
	if err != nil {
		return nil, err
	}
	v := &volume{bootSector: *bs, r: r, offset: offset}
	v.bytesPerCluster = bs.bytesPerSector * bs.sectorsPerCluster
	fatBytes := bs.sectorsPerFAT * int64(bs.bytesPerSector)
	v.dataStart = int64(bs.reservedSectors)*int64(bs.bytesPerSector) + int64(bs.numFATs)*fatBytes
	dataSectors := bs.totalSectors - v.dataStart/int64(bs.bytesPerSector)
	if dataSectors <= 0 {
		return nil, fmt.Errorf("no data area (%d sectors in all, data from sector %d)", bs.totalSectors, v.dataStart/int64(bs.bytesPerSector))
	}
	v.clusterCount = uint32(min(dataSectors/int64(bs.sectorsPerCluster), 0x0ffffff6))
	if int64(v.clusterCount)+2 > fatBytes/4 {
		// The FAT is smaller than the data area: only what it maps is usable.
		v.clusterCount = uint32(fatBytes/4) - 2
	}
	if v.clusterCount < 1 || v.clusterCount > 0x0ffffff5 || fatBytes > 1<<30 {
		return nil, fmt.Errorf("implausible geometry (%d clusters, %d-byte FAT)", v.clusterCount, fatBytes)
	}
	raw := make([]byte, (int64(v.clusterCount)+2)*4)
	if _, err := r.ReadAt(raw, offset+v.fatStart(0)); err != nil {
		return nil, fmt.Errorf("read FAT: %w", err)
	}
	v.fat = make([]uint32, v.clusterCount+2)
	for i := range v.fat {
		v.fat[i] = binary.LittleEndian.Uint32(raw[i*4:])
	}
	return v, nil
}

// fatStart is the byte offset of FAT copy n from the partition start.
func (v *volume) fatStart(n int) int64 {
	return int64(v.reservedSectors)*int64(v.bytesPerSector) + int64(n)*v.sectorsPerFAT*int64(v.bytesPerSector)
}

func (v *volume) clusterOffset(c uint32) int64 {
	return v.offset + v.dataStart + int64(c-2)*int64(v.bytesPerCluster)
}

func (v *volume) validCluster(c uint32) bool { return c >= 2 && c < v.clusterCount+2 }

func (v *volume) countFree() uint32 {
	var n uint32
	for c := uint32(2); c < v.clusterCount+2; c++ {
		if v.fat[c]&fatMask == 0 {
			n++
		}
	}
	return n
}

// chain returns the clusters of the chain starting at first.
func (v *volume) chain(first uint32) ([]uint32, error) {
	var out []uint32
	seen := map[uint32]bool{}
	for c := first; ; {
		if !v.validCluster(c) {
			return out, fmt.Errorf("cluster chain from %d reaches invalid cluster %d", first, c)
		}
		if seen[c] {
			return out, fmt.Errorf("cluster chain from %d loops at cluster %d", first, c)
		}
		seen[c] = true
		out = append(out, c)
		next := v.fat[c] & fatMask
		if next >= fatEOC {
			return out, nil
		}
		if next == 0 || next == fatBad {
			return out, fmt.Errorf("cluster chain from %d ends in a free or bad cluster after %d", first, c)
		}
		c = next
	}
}

// dirEntry is one short directory entry found on disk, with where it is.
type dirEntry struct {
	path    string // full path with long names, lower-cased, "/"-separated, no leading slash
	name    string // the name as found (long name when there is one)
	pos     int64  // byte offset of the 32-byte short entry in the image
	attr    byte
	cluster uint32
	size    uint32
	raw     [32]byte
	lfnPos  []int64 // byte offsets of the long-name slots that belong to it
}

func (e *dirEntry) isDir() bool { return e.attr&0x10 != 0 }

const (
	attrVolumeLabel = 0x08
	attrLFN         = 0x0f
)

// readDir parses the directory whose chain starts at first.
func (v *volume) readDir(first uint32, dirPath string) ([]*dirEntry, error) {
	clusters, err := v.chain(first)
	if err != nil {
		return nil, err
	}
	var out []*dirEntry
	var lfn []uint16
	var lfnPos []int64
	buf := make([]byte, v.bytesPerCluster)
	for _, c := range clusters {
		base := v.clusterOffset(c)
		if _, err := v.r.ReadAt(buf, base); err != nil {
			return nil, fmt.Errorf("read directory cluster %d: %w", c, err)
		}
		for i := 0; i < len(buf); i += 32 {
			e := buf[i : i+32]
			switch e[0] {
			case 0x00:
				return out, nil
			case 0xe5:
				lfn, lfnPos = nil, nil
				continue
			}
			attr := e[11]
			if attr == attrLFN {
				if e[0]&0x40 != 0 {
					lfn, lfnPos = nil, nil
				}
				lfnPos = append(lfnPos, base+int64(i))
				part := make([]uint16, 0, 13)
				for _, r := range [][2]int{{1, 11}, {14, 26}, {28, 32}} {
					for j := r[0]; j < r[1]; j += 2 {
						part = append(part, binary.LittleEndian.Uint16(e[j:]))
					}
				}
				lfn = append(part, lfn...)
				continue
			}
			if attr&attrVolumeLabel != 0 {
				lfn, lfnPos = nil, nil
				continue
			}
			name := shortName(e)
			if long := decodeLFN(lfn); long != "" {
				name = long
			}
			de := &dirEntry{
				lfnPos:  lfnPos,
				name:    name,
				pos:     base + int64(i),
				attr:    attr,
				cluster: uint32(binary.LittleEndian.Uint16(e[20:22]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:28])),
				size:    binary.LittleEndian.Uint32(e[28:32]),
			}
			lfn, lfnPos = nil, nil
			copy(de.raw[:], e)
			de.path = strings.ToLower(strings.TrimPrefix(dirPath+"/"+name, "/"))
			out = append(out, de)
		}
	}
	return out, nil
}

// shortName renders an 8.3 entry name, honouring the lower-case flags.
func shortName(e []byte) string {
	base := strings.TrimRight(string(e[0:8]), " ")
	ext := strings.TrimRight(string(e[8:11]), " ")
	if base != "" && base[0] == 0x05 {
		base = "\xe5" + base[1:]
	}
	if e[12]&0x08 != 0 {
		base = strings.ToLower(base)
	}
	if e[12]&0x10 != 0 {
		ext = strings.ToLower(ext)
	}
	if ext == "" {
		return base
	}
	return base + "." + ext
}

func decodeLFN(u []uint16) string {
	for i, c := range u {
		if c == 0 {
			u = u[:i]
			break
		}
	}
	return string(utf16.Decode(u))
}

// lfnChecksum is the checksum of an 8.3 name that its long-name slots carry.
func lfnChecksum(name []byte) byte {
	var sum byte
	for _, c := range name[:11] {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// checkChains refuses a FAT go-diskfs would loop on forever or index out of
// range with: an entry pointing outside the data area, or a chain that
// loops. It follows every chain once (white/grey/black marking), so it is
// linear in the number of clusters.
func (v *volume) checkChains() error {
	const (
		unseen = iota
		onPath
		done
	)
	state := make([]uint8, len(v.fat))
	end := v.clusterCount + 2
	for start := uint32(2); start < end; start++ {
		if state[start] != unseen || v.fat[start]&fatMask == 0 {
			continue
		}
		var path []uint32
		for c := start; ; {
			if state[c] == onPath {
				return fmt.Errorf("fat: cluster chain through cluster %d loops; the filesystem is damaged (check it with fsck.fat)", c)
			}
			if state[c] == done {
				break
			}
			state[c] = onPath
			path = append(path, c)
			next := v.fat[c] & fatMask
			if next >= fatBad || next == 0 {
				break
			}
			if next < 2 || next >= end {
				return fmt.Errorf("fat: cluster %d points at cluster %d, outside the filesystem; the filesystem is damaged (check it with fsck.fat)", c, next)
			}
			c = next
		}
		for _, c := range path {
			state[c] = done
		}
	}
	return nil
}
