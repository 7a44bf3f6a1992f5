package blockdev

import (
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// loop is an attached loop device and what it reads.
type loop struct {
	name string
	dev  Dev
	file string // its backing file, as sysfs names it
	// on are the devices it reads: its backing device, or the devices of
	// the filesystem its backing file is on (viaFile).
	on      []Dev
	viaFile bool
	// fileDev and ino are the backing file's st_dev and inode.
	fileDev Dev
	ino     uint64
}

// readLoops lists the attached loop devices under root. What each reads
// comes from the loop driver itself (LOOP_GET_STATUS64: the backing file's
// st_dev and st_rdev), which holds even when the file was deleted or lives
// in another mount namespace; the backing file's path, stat'ed, is the
// fallback when the loop device's node cannot be asked.
func readLoops(root string, mounts []Mount) []loop {
	files, _ := filepath.Glob(filepath.Join(root, "sys/block/loop*/loop/backing_file"))
	var out []loop
	for _, f := range files {
		sys := filepath.Dir(filepath.Dir(f))
		dev, err := ParseDev(readAttr(sys, "dev"))
		data, ferr := os.ReadFile(f)
		if err != nil || ferr != nil {
			continue // detached meanwhile
		}
		l := loop{name: filepath.Base(sys), dev: dev, file: strings.TrimSuffix(string(data), "\n")}
		if st, ok := loopStatus(filepath.Join(root, "dev", l.name), dev); ok {
			l.fileDev, l.ino = Dev(st.Device), st.Inode
			if st.Rdevice != 0 {
				l.on = []Dev{Dev(st.Rdevice)}
			} else if l.on, l.viaFile = fsDevs(root, l.fileDev, mounts), true; len(l.on) == 0 {
				l.on = inodeDevs(root, l, mounts)
			}
		} else {
			var st unix.Stat_t
			if unix.Stat(filepath.Join(root, l.file), &st) == nil {
				l.fileDev, l.ino = Dev(st.Dev), st.Ino
			}
			l.on = pathDevs(root, l.file, mounts)
			l.viaFile = isFile(filepath.Join(root, l.file))
		}
		out = append(out, l)
	}
	return out
}

// inodeDevs are the devices of the mount (in this namespace) that holds
// the loop device's backing file by its sysfs path, when the file there is
// the one the loop driver reads (its st_dev and inode): a file in a btrfs
// subvolume that is not itself mounted has a number no mount shows.
func inodeDevs(root string, l loop, mounts []Mount) []Dev {
	var st unix.Stat_t
	if unix.Stat(filepath.Join(root, l.file), &st) != nil || Dev(st.Dev) != l.fileDev || st.Ino != l.ino {
		return nil
	}
	var own []Mount
	for _, m := range mounts {
		if m.PID == 0 {
			own = append(own, m)
		}
	}
	if m := MountOf(own, l.file); m != nil {
		return mountDevs(root, *m)
	}
	return nil
}

// loopStatus asks the loop device at node, which must be dev, what it reads.
func loopStatus(node string, dev Dev) (*unix.LoopInfo64, bool) {
	f, err := openDev(node, dev, unix.O_RDONLY)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	st, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	return st, err == nil
}

// LoopsOf names the loop devices (under root) that read the file at path:
// by the file's st_dev and inode, as the loop driver keeps them, whatever
// name it was attached by.
func LoopsOf(root, path string) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	var out []string
	for _, l := range readLoops(root, nil) {
		if l.fileDev == Dev(st.Dev) && l.ino == st.Ino {
			out = append(out, "/dev/"+l.name)
		}
	}
	return out, nil
}
