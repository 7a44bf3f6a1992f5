package fatfs

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// fixup repairs what go-diskfs leaves behind, reading and writing the image
// directly:
//   - `.` and `..` of directories created in this session: `..` points at the
//     parent's first cluster, 0 for the root (go-diskfs writes the root's
//     cluster number), and both take the directory's own time (go-diskfs
//     takes the clock's);
//   - files written empty in this session own no cluster;
//   - every cluster no file or directory reaches is freed (go-diskfs's Remove
//     and truncation leave them allocated), and every chain is cut to its
//     file's size;
//   - all FAT copies equal the first;
//   - FSInfo's free count and next-free hint match the FAT.
func (f *FS) fixup() error {
	v, err := readVolume(f.r, f.offset)
	if err != nil {
		return fmt.Errorf("fat: %w", err)
	}
	var patches []patch
	used := make([]bool, len(v.fat))

	type dir struct {
		first uint32
		path  string
	}
	queue := []dir{{v.rootCluster, ""}}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		clusters, err := v.chain(d.first)
		if err != nil {
			return fmt.Errorf("fat: directory /%s: %w; the base's FAT is damaged (check it with fsck.fat)", d.path, err)
		}
		for _, c := range clusters {
			if used[c] {
				return fmt.Errorf("fat: directory /%s: cluster %d is used twice; the base's FAT is damaged (check it with fsck.fat)", d.path, c)
			}
			used[c] = true
		}
		entries, err := v.readDir(d.first, d.path)
		if err != nil {
			return fmt.Errorf("fat: directory /%s: %w", d.path, err)
		}
		renames, err := f.uniqueShortNames(d.path, entries)
		if err != nil {
			return err
		}
		patches = append(patches, renames...)
		for _, e := range entries {
			if e.name == "." || e.name == ".." {
				continue
			}
			if e.isDir() {
				if f.newDirs[e.path] {
					p, err := f.fixDotEntries(v, e, d.first == v.rootCluster, d.first)
					if err != nil {
						return err
					}
					patches = append(patches, p...)
				}
				if !v.validCluster(e.cluster) {
					return fmt.Errorf("fat: directory /%s has invalid first cluster %d", e.path, e.cluster)
				}
				queue = append(queue, dir{e.cluster, e.path})
				continue
			}
			if e.size == 0 {
				if e.cluster != 0 && f.written[e.path] {
					// go-diskfs gives every new file a cluster, and keeps one on
					// truncation; an empty file owns none.
					raw := e.raw
					binary.LittleEndian.PutUint16(raw[20:22], 0)
					binary.LittleEndian.PutUint16(raw[26:28], 0)
					patches = append(patches, patch{e.pos, raw[:]})
				} else if e.cluster != 0 {
					return fmt.Errorf("fat: empty file /%s owns cluster %d; the base's FAT is damaged (check it with fsck.fat)", e.path, e.cluster)
				}
				continue
			}
			clusters, err := v.chain(e.cluster)
			if err != nil {
				return fmt.Errorf("fat: file /%s: %w", e.path, err)
			}
			need := int((int64(e.size) + int64(v.bytesPerCluster) - 1) / int64(v.bytesPerCluster))
			if len(clusters) < need {
				return fmt.Errorf("fat: file /%s has %d bytes but only %d clusters", e.path, e.size, len(clusters))
			}
			if len(clusters) > need {
				// Cut the chain; the rest is freed below as unreachable.
				v.fat[clusters[need-1]] = v.fat[clusters[need-1]]&^fatMask | fatEOCMark
				clusters = clusters[:need]
			}
			for _, c := range clusters {
				if used[c] {
					return fmt.Errorf("fat: file /%s: cluster %d is used twice; the base's FAT is damaged (check it with fsck.fat)", e.path, c)
				}
				used[c] = true
			}
		}
	}
	for c := uint32(2); c < v.clusterCount+2; c++ {
		val := v.fat[c] & fatMask
		if !used[c] && val != 0 && val != fatBad {
			v.fat[c] = 0
		}
	}

	// All FAT copies from the first.
	raw := make([]byte, len(v.fat)*4)
	for i, val := range v.fat {
		binary.LittleEndian.PutUint32(raw[i*4:], val)
	}
	for n := 0; n < v.numFATs; n++ {
		patches = append(patches, patch{v.offset + v.fatStart(n), raw})
	}

	// FSInfo, and its copy after the backup boot sector.
	free := v.countFree()
	nextFree := uint32(0xffffffff)
	for c := uint32(2); c < v.clusterCount+2; c++ {
		if v.fat[c]&fatMask == 0 {
			nextFree = c
			break
		}
	}
	fsInfoSectors := []int{v.fsInfoSector}
	if v.backupBootSector > 0 && v.backupBootSector+1 != v.fsInfoSector {
		fsInfoSectors = append(fsInfoSectors, v.backupBootSector+1)
	}
	for _, s := range fsInfoSectors {
		pos := v.offset + int64(s)*int64(v.bytesPerSector)
		sector := make([]byte, 512)
		if _, err := f.r.ReadAt(sector, pos); err != nil {
			return fmt.Errorf("fat: read FSInfo: %w", err)
		}
		if binary.LittleEndian.Uint32(sector[0:4]) != 0x41615252 || binary.LittleEndian.Uint32(sector[484:488]) != 0x61417272 {
			continue // no FSInfo here; nothing to keep up to date
		}
		binary.LittleEndian.PutUint32(sector[488:492], free)
		binary.LittleEndian.PutUint32(sector[492:496], nextFree)
		patches = append(patches, patch{pos, sector})
	}

	for _, p := range patches {
		if p.pos < f.offset || p.pos+int64(len(p.data)) > f.offset+f.size {
			return fmt.Errorf("fat: fixup at byte %d (+%d) falls outside the partition; nothing written", p.pos, len(p.data))
		}
	}
	for _, p := range patches {
		if _, err := f.w.WriteAt(p.data, p.pos); err != nil {
			return fmt.Errorf("fat: write fixup at byte %d: %w", p.pos, err)
		}
	}
	return nil
}

// patch is bytes to write at an image offset.
type patch struct {
	pos  int64
	data []byte
}

// fixDotEntries points `.` at the new directory and `..` at its parent (0 for
// the root), with the directory's own time.
func (f *FS) fixDotEntries(v *volume, e *dirEntry, parentIsRoot bool, parentCluster uint32) ([]patch, error) {
	if !v.validCluster(e.cluster) {
		return nil, fmt.Errorf("fat: new directory /%s has invalid first cluster %d", e.path, e.cluster)
	}
	buf := make([]byte, 64)
	pos := v.clusterOffset(e.cluster)
	if _, err := f.r.ReadAt(buf, pos); err != nil {
		return nil, fmt.Errorf("fat: read new directory /%s: %w", e.path, err)
	}
	if string(buf[0:11]) != ".          " || string(buf[32:43]) != "..         " {
		return nil, fmt.Errorf("fat: new directory /%s does not start with . and .. entries", e.path)
	}
	if parentIsRoot {
		parentCluster = 0
	}
	setCluster := func(ent []byte, c uint32) {
		binary.LittleEndian.PutUint16(ent[20:22], uint16(c>>16))
		binary.LittleEndian.PutUint16(ent[26:28], uint16(c))
	}
	setCluster(buf[0:32], e.cluster)
	setCluster(buf[32:64], parentCluster)
	for _, ent := range [][]byte{buf[0:32], buf[32:64]} {
		// Times from the directory's own entry: creation (13..17), access
		// date (18..19), modification (22..25).
		copy(ent[13:20], e.raw[13:20])
		copy(ent[22:26], e.raw[22:26])
	}
	return []patch{{pos, buf}}, nil
}

// uniqueShortNames gives entries written in this session a numeric-tail
// 8.3 name (NAME~1.EXT) where go-diskfs gave them one another entry already
// has: it only adds the tail when a long name is longer than 8 characters,
// so manifest.json and manifest.jsonl both become MANIFEST.JSO.
func (f *FS) uniqueShortNames(dirPath string, entries []*dirEntry) ([]patch, error) {
	taken := map[string]bool{}
	var clashing []*dirEntry
	for _, e := range entries {
		short := string(e.raw[0:11])
		if e.name == "." || e.name == ".." {
			continue
		}
		if !taken[short] {
			taken[short] = true
			continue
		}
		if f.newDirs[e.path] || f.written[e.path] {
			clashing = append(clashing, e)
		}
		// A clash between two entries of the base is the base's own; it is
		// left as it was.
	}
	var patches []patch
	for _, e := range clashing {
		if len(e.lfnPos) == 0 {
			return nil, fmt.Errorf("fat: /%s: 8.3 name %q is taken and the entry has no long name", e.path, string(e.raw[0:11]))
		}
		stem := strings.TrimRight(string(e.raw[0:8]), " ")
		if i := strings.IndexByte(stem, '~'); i >= 0 {
			stem = stem[:i]
		}
		var short string
		for n := 1; ; n++ {
			tail := fmt.Sprintf("~%d", n)
			s := stem
			if len(s) > 8-len(tail) {
				s = s[:8-len(tail)]
			}
			short = fmt.Sprintf("%-8s", s+tail) + string(e.raw[8:11])
			if !taken[short] {
				break
			}
			if n > 999999 {
				return nil, fmt.Errorf("fat: directory /%s: no free 8.3 name for %s", dirPath, e.name)
			}
		}
		taken[short] = true
		raw := e.raw
		copy(raw[0:11], short)
		patches = append(patches, patch{e.pos, append([]byte(nil), raw[:]...)})
		sum := lfnChecksum(raw[0:11])
		for _, pos := range e.lfnPos {
			patches = append(patches, patch{pos + 13, []byte{sum}})
		}
	}
	return patches, nil
}
