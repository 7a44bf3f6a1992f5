package hook

import (
	"io/fs"
	"syscall"
)

// ownedBy reports whether fi belongs to uid:gid.
func ownedBy(fi fs.FileInfo, uid, gid int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == uid && int(st.Gid) == gid
}
