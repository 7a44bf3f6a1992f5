package source

import (
	"archive/zip"
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func (s *Source) writeGzip(ctx context.Context, dst Sink, in io.Reader, image hash.Hash) (int64, error) {
	zr, err := gzip.NewReader(bufio.NewReaderSize(in, 256<<10))
	if err != nil {
		return 0, decodeError(Gzip, err)
	}
	defer zr.Close()
	n, err := copySparse(ctx, dst, zr, image)
	return n, decodeError(Gzip, err)
}

func (s *Source) writeZstd(ctx context.Context, dst Sink, in io.Reader, image hash.Hash) (int64, error) {
	// Low-memory mode and a 128 MiB window cap keep RSS bounded; zstd -19
	// uses 8 MiB windows, and --long=27 (the largest common choice) 128 MiB.
	zr, err := zstd.NewReader(in, zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(128<<20))
	if err != nil {
		return 0, decodeError(Zstd, err)
	}
	defer zr.Close()
	n, err := copySparse(ctx, dst, zr, image)
	return n, decodeError(Zstd, err)
}

// writeZip extracts the one .img in a zip archive. A zip's directory is at
// its end, so the whole archive is needed first: a local file is hashed in
// one sequential read, a URL is downloaded (and hashed) to a temporary file
// under Options.TempDir. Either way the checksum is verified before
// anything is extracted.
func (s *Source) writeZip(ctx context.Context, dst Sink, in *inputReader, image hash.Hash) (int64, error) {
	archive := s.file
	if archive == nil {
		tmp, err := os.CreateTemp(s.opts.TempDir, "nixpi-base-*.zip")
		if err != nil {
			return 0, fmt.Errorf("download zip archive: %w (zip needs the whole file; set TMPDIR to a directory with room)", err)
		}
		s.tempZip = tmp.Name()
		s.file = tmp
		archive = tmp
		if _, err := io.Copy(tmp, contextReader{ctx, in}); err != nil {
			return 0, fmt.Errorf("download %q to %q: %w", s.Name, tmp.Name(), err)
		}
	} else if _, err := io.Copy(io.Discard, contextReader{ctx, in}); err != nil {
		return 0, fmt.Errorf("read %q: %w", s.Name, err)
	}
	if err := s.verifyEarly(in); err != nil {
		return 0, err
	}
	zr, err := zip.NewReader(archive, in.n)
	if err != nil {
		return 0, &DecodeError{Format: Zip, Truncated: errors.Is(err, zip.ErrFormat), Err: err}
	}
	var images, others []string
	var entry *zip.File
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		if strings.HasSuffix(strings.ToLower(f.Name), ".img") {
			images = append(images, f.Name)
			entry = f
		} else {
			others = append(others, f.Name)
		}
	}
	switch len(images) {
	case 0:
		sort.Strings(others)
		return 0, fmt.Errorf("zip archive %q holds no .img file (it holds %d other files: %s): pass the image itself as the base",
			s.Name, len(others), strings.Join(firstN(others, 5), ", "))
	case 1:
	default:
		sort.Strings(images)
		return 0, fmt.Errorf("zip archive %q holds %d .img files (%s): extract the one you want and pass it as the base",
			s.Name, len(images), strings.Join(firstN(images, 5), ", "))
	}
	rc, err := entry.Open()
	if err != nil {
		return 0, decodeError(Zip, err)
	}
	defer rc.Close()
	n, err := copySparse(ctx, dst, rc, image)
	return n, decodeError(Zip, err)
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "...")
	}
	return s
}

// contextReader stops a long copy when ctx is cancelled.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
