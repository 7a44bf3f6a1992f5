// Package source opens the Raspberry Pi OS base image a build starts from: a
// local path or an http(s) URL, raw or compressed (xz, gzip, zstd, or a zip
// holding one .img), checksum-verified, and streams the decompressed image
// into a sparse output file.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strings"

	"github.com/nixpi/nixpi/firstboot/inputfile"
)

// Options tune Open. The zero value works: sidecar checksum if present,
// http.DefaultClient, xz-utils when installed, one xz worker per CPU.
type Options struct {
	// SHA256 is the expected hex digest of the input as given (the
	// compressed file, as downloaded). It takes precedence over a sidecar.
	SHA256 string
	// SHA256Origin names where SHA256 came from in error messages;
	// "--sha256" when empty.
	SHA256Origin string
	// HTTPClient fetches URLs; http.DefaultClient when nil.
	HTTPClient *http.Client
	// Progress, when set, is called with the number of input (compressed)
	// bytes consumed so far and the input size (-1 when unknown). Calls are
	// serialised.
	Progress func(done, total int64)
	// HashImage also computes the sha256 of the decompressed image
	// (Stats.ImageSHA256). It costs a little CPU, and on the xz-utils path
	// it routes xz's output through this process instead of letting xz
	// write the file directly.
	HashImage bool
	// DisableExternalXZ decodes xz in Go (ulikunitz/xz) even when xz-utils
	// is installed.
	DisableExternalXZ bool
	// XZPath is the xz-utils binary; looked up as "xz" in PATH when empty.
	XZPath string
	// Workers is the number of goroutines decoding xz blocks in parallel
	// on the Go path; GOMAXPROCS when 0.
	Workers int
	// TempDir receives a zip archive downloaded from a URL (zip needs
	// random access); os.TempDir() when empty.
	TempDir string
	// Log, when set, receives one line per external command (quoted argv).
	Log func(line string)
	// InputHashed, when set, is called once with the input's sha256 (hex)
	// as soon as all of it has been hashed: for a local xz file decoded by
	// xz-utils that is long before decoding ends, otherwise at its end.
	// Comparing it with the expected checksum is still WriteTo's job.
	InputHashed func(sha256 string)
}

// Source is an opened base image. Close it when done.
type Source struct {
	Name   string // the path or URL as given
	Format Format
	// Size is the input (compressed) size in bytes, -1 when unknown.
	Size int64
	// Checksum is the expected input sha256 (lowercase hex), "" if none.
	Checksum string
	// ChecksumOrigin says where Checksum came from: SHA256Origin or the
	// sidecar's path or URL.
	ChecksumOrigin string

	opts    Options
	file    *os.File      // local input (or the downloaded zip), seekable
	body    io.ReadCloser // URL input
	head    []byte        // the first bytes of the input, for sniffing
	input   io.Reader     // the input from byte 0, whatever kind
	tempZip string        // downloaded zip to remove on Close
	used    bool
	stream  bool    // Stream: only decoders that write in order
	plan    *xzPlan // once chosen
}

// Stats describe a finished WriteTo.
type Stats struct {
	Format  Format
	Decoder string // what decompressed it, e.g. "xz-utils", "parallel xz (72 blocks, 2 workers)"
	// InputSize and InputSHA256 describe the input as given (compressed).
	InputSize   int64
	InputSHA256 string
	// Verified is true when the input matched an expected checksum.
	Verified       bool
	ChecksumOrigin string
	ImageSize      int64
	// ImageSHA256 is the decompressed image's digest; only with HashImage.
	ImageSHA256 string
}

// IsURL reports whether src names an http(s) URL rather than a path.
// Schemes are case-insensitive (RFC 3986), so HTTPS://… is one too.
func IsURL(src string) bool {
	lower := strings.ToLower(src[:min(len(src), len("https://"))])
	return strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://")
}

// schemeRE matches a URL's scheme (RFC 3986) and "://".
var schemeRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*)://`)

// otherScheme reports a URL scheme other than http(s), so "ftp://…" or
// "file://…" is refused rather than taken for a file name.
func otherScheme(src string) (string, bool) {
	m := schemeRE.FindStringSubmatch(src)
	if m == nil || IsURL(src) {
		return "", false
	}
	return m[1], true
}

// Open opens src, finds its checksum (Options.SHA256, else a sidecar
// src+".sha256") and detects its format from its first bytes. Nothing is
// decompressed yet.
func Open(ctx context.Context, src string, opts Options) (*Source, error) {
	if opts.SHA256Origin == "" {
		opts.SHA256Origin = "--sha256"
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	s := &Source{Name: src, opts: opts, Size: -1}
	if opts.SHA256 != "" {
		sum, err := parseHex(opts.SHA256)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", opts.SHA256Origin, err)
		}
		s.Checksum, s.ChecksumOrigin = sum, opts.SHA256Origin
	}
	if scheme, ok := otherScheme(src); ok {
		return nil, fmt.Errorf("base image %q: %s:// URLs are not supported: pass a path or an http(s) URL (download it first with a tool that speaks %s)", src, scheme, scheme)
	}
	var err error
	if IsURL(src) {
		err = s.openURL(ctx)
	} else {
		err = s.openFile()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	if s.Format, err = sniff(s.head); err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return s, nil
}

func (s *Source) openFile() error {
	f, err := os.Open(s.Name)
	if err != nil {
		return fmt.Errorf("open base image: %w", err)
	}
	s.file = f
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open base image: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("base image %q is not a regular file", s.Name)
	}
	s.Size = st.Size()
	if s.Size == 0 {
		return fmt.Errorf("base image %q is empty", s.Name)
	}
	s.head = make([]byte, min(int64(sniffLen), s.Size))
	if _, err := f.ReadAt(s.head, 0); err != nil {
		return fmt.Errorf("read base image %q: %w", s.Name, err)
	}
	s.input = f
	if s.Checksum == "" {
		sidecar := s.Name + ".sha256"
		data, err := inputfile.Read(sidecar, "a sha256sum checksum file", maxSidecar)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("read checksum file: %w", err)
		default:
			if s.Checksum, err = parseSidecar(data, s.Name); err != nil {
				return fmt.Errorf("checksum file %q: %w", sidecar, err)
			}
			s.ChecksumOrigin = sidecar
		}
	}
	return nil
}

// WritesInOrder reports whether WriteTo writes its output strictly front
// to back, so that while it runs every byte below the output's current size
// is final (holes included). Only the parallel Go xz decoder, which writes
// blocks as they finish, does not.
func (s *Source) WritesInOrder() bool {
	return s.Format != XZ || s.xzPlan().decoder != xzParallel
}

// Close releases the input and removes any temporary download.
func (s *Source) Close() error {
	var errs []error
	if s.file != nil {
		errs = append(errs, s.file.Close())
	}
	if s.body != nil {
		errs = append(errs, s.body.Close())
	}
	if s.tempZip != "" {
		errs = append(errs, os.Remove(s.tempZip))
	}
	return errors.Join(errs...)
}
