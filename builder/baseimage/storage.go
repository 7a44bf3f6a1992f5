package baseimage

import (
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/diskfs/go-diskfs/backend"
)

// readOnlyStorage gives go-diskfs an io.ReaderAt as its backend. It has no
// way to write, which is how Inspect guarantees it never changes the image.
type readOnlyStorage struct {
	*io.SectionReader
	size int64
}

func storage(r io.ReaderAt, size int64) backend.Storage {
	return readOnlyStorage{SectionReader: io.NewSectionReader(r, 0, size), size: size}
}

var _ backend.Storage = readOnlyStorage{}

func (s readOnlyStorage) Stat() (fs.FileInfo, error) { return sizeInfo(s.size), nil }
func (s readOnlyStorage) Close() error               { return nil }
func (s readOnlyStorage) Sys() (*os.File, error)     { return nil, backend.ErrNotSuitable }
func (s readOnlyStorage) Writable() (backend.WritableFile, error) {
	return nil, backend.ErrIncorrectOpenMode
}
func (s readOnlyStorage) Path() string { return "" }

// sizeInfo is the FileInfo of a nameless image of a given size.
type sizeInfo int64

func (s sizeInfo) Name() string       { return "image" }
func (s sizeInfo) Size() int64        { return int64(s) }
func (s sizeInfo) Mode() fs.FileMode  { return 0o444 }
func (s sizeInfo) ModTime() time.Time { return time.Time{} }
func (s sizeInfo) IsDir() bool        { return false }
func (s sizeInfo) Sys() any           { return nil }
