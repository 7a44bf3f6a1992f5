package source

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestSniff(t *testing.T) {
	t.Parallel()
	mbr := make([]byte, 1024)
	mbr[510], mbr[511] = 0x55, 0xaa
	gpt := make([]byte, 1024)
	copy(gpt[512:], "EFI PART")
	tests := []struct {
		name    string
		head    []byte
		want    Format
		wantErr string
	}{
		{"xz", append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, 0, 4), XZ, ""},
		{"gzip", []byte{0x1f, 0x8b, 8, 0}, Gzip, ""},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x24}, Zstd, ""},
		{"zip", []byte("PK\x03\x04\x14\x00"), Zip, ""},
		{"mbr disk", mbr, Raw, ""},
		{"gpt disk without protective mbr", gpt, Raw, ""},
		{"empty zip", []byte("PK\x05\x06\x00\x00"), 0, "zip archive is empty"},
		{"bzip2", []byte("BZh91AY&SY"), 0, "bzip2 archives are not supported"},
		{"7z", []byte{'7', 'z', 0xbc, 0xaf, 0x27, 0x1c, 0, 4}, 0, "7-zip archives are not supported"},
		{"text", []byte("hello, this is not an image\n"), 0, "not a disk image or known archive"},
		{"zeros", make([]byte, 1024), 0, "not a disk image or known archive"},
		{"xz magic cut short", []byte{0xfd, '7', 'z'}, 0, "not a disk image or known archive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sniff(tt.head)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("sniff = %v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("sniff = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, src string
		opts      Options
		wantErr   string
	}{
		{"missing", filepath.Join(dir, "nope.img"), Options{}, "no such file"},
		{"empty", writeFile(t, filepath.Join(dir, "empty.img"), nil), Options{}, "is empty"},
		{"directory", dir, Options{}, "not a regular file"},
		{"not an image", writeFile(t, filepath.Join(dir, "notes.img"), []byte("just text\n")), Options{}, "not a disk image or known archive"},
		{"bad --sha256", writeFile(t, filepath.Join(dir, "a.img"), diskImage(1<<20, 1)), Options{SHA256: "abc"}, "--sha256: sha256 \"abc\" must be 64 hex digits"},
		{"non-hex --sha256", filepath.Join(dir, "a.img"), Options{SHA256: strings.Repeat("g", 64)}, "is not hex"},
	}
	writeFile(t, filepath.Join(dir, "bad-sidecar.img"), diskImage(1<<20, 1))
	writeFile(t, filepath.Join(dir, "bad-sidecar.img.sha256"), []byte("deadbeef  bad-sidecar.img\n"))
	tests = append(tests, struct {
		name, src string
		opts      Options
		wantErr   string
	}{"malformed sidecar", filepath.Join(dir, "bad-sidecar.img"), Options{}, "bad-sidecar.img.sha256\": line 1: sha256 \"deadbeef\" must be 64 hex digits"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(context.Background(), tt.src, tt.opts)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded, want error containing %q", tt.src, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Open(%q) = %v, want error containing %q", tt.src, err, tt.wantErr)
			}
		})
	}
}

// decoders lists every way an input can be decoded, so each format is
// checked through each path that can handle it.
var decoders = []struct {
	name        string
	format      Format
	opts        Options
	wantDecoder string
}{
	{"raw", Raw, Options{}, "raw"},
	{"gzip", Gzip, Options{}, "gzip"},
	{"zstd", Zstd, Options{}, "zstd"},
	{"zip", Zip, Options{}, "zip"},
	{"xz-utils", XZ, Options{}, "xz-utils"},
	{"xz-utils hashing image", XZ, Options{HashImage: true}, "xz-utils"},
	{"xz parallel", XZ, Options{DisableExternalXZ: true, Workers: 2}, "parallel xz"},
	{"xz parallel 3 workers", XZ, Options{DisableExternalXZ: true, Workers: 3, HashImage: true}, "parallel xz"},
	{"xz sequential", XZ, Options{DisableExternalXZ: true, Workers: 1}, "sequential xz"},
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	img := diskImage(12<<20, 7)
	for _, d := range decoders {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			src := compressed(t, t.TempDir(), img, d.format)
			opts := d.opts
			opts.HashImage = true
			var calls, last, total int64
			opts.Progress = func(done, n int64) { calls, last, total = calls+1, done, n }
			out, st, err := decode(t, src, opts)
			if err != nil {
				t.Fatal(err)
			}
			if size := int64(len(readFile(t, src))); calls < 2 || last != size || total != size {
				t.Errorf("progress: %d calls, ended at %d of %d; want several, ending at %d of %d", calls, last, total, size, size)
			}
			mustEqualFile(t, out, img)
			if !strings.HasPrefix(st.Decoder, d.wantDecoder) {
				t.Errorf("decoder = %q, want %q", st.Decoder, d.wantDecoder)
			}
			if st.Format != d.format || st.ImageSize != int64(len(img)) {
				t.Errorf("stats = %+v, want format %v, image size %d", st, d.format, len(img))
			}
			if want := fileSHA256(t, src); st.InputSHA256 != want {
				t.Errorf("input sha256 = %s, want %s (of the compressed file)", st.InputSHA256, want)
			}
			if st.ImageSHA256 != sha256Hex(img) {
				t.Errorf("image sha256 = %s, want %s", st.ImageSHA256, sha256Hex(img))
			}
			if st.Verified {
				t.Errorf("verified without any checksum")
			}
		})
	}
}

// TestSparse checks that zero regions become holes on every decode path.
func TestSparse(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	img := make([]byte, size)
	img[510], img[511] = 0x55, 0xaa
	copy(img[5<<20:], bytes.Repeat([]byte("bootfs "), 100000)) // ~0.7 MiB of data
	copy(img[40<<20+100:], bytes.Repeat([]byte{0xa5}, 5000))   // unaligned data
	for _, d := range decoders {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			src := compressed(t, t.TempDir(), img, d.format)
			out, _, err := decode(t, src, d.opts)
			if err != nil {
				t.Fatal(err)
			}
			mustEqualFile(t, out, img)
			var st syscall.Stat_t
			if err := syscall.Stat(out, &st); err != nil {
				t.Fatal(err)
			}
			if st.Size != size {
				t.Fatalf("size %d, want %d", st.Size, size)
			}
			if allocated := st.Blocks * 512; allocated > 4<<20 {
				t.Fatalf("%d bytes allocated for %d bytes of which ~0.7 MiB are data: not sparse", allocated, size)
			}
		})
	}
}

func TestChecksum(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := diskImage(4<<20, 3)
	src := compressed(t, dir, img, XZ)
	good := fileSHA256(t, src)
	bad := strings.Repeat("0", 64)

	t.Run("absent", func(t *testing.T) {
		_, st, err := decode(t, src, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if st.Verified || st.ChecksumOrigin != "" {
			t.Fatalf("verified = %v from %q without a checksum", st.Verified, st.ChecksumOrigin)
		}
	})

	withSidecar := func(t *testing.T, line string) string {
		d := t.TempDir()
		data, _ := os.ReadFile(src)
		p := writeFile(t, filepath.Join(d, "2025-05-13-raspios-bookworm-arm64-lite.img.xz"), data)
		writeFile(t, p+".sha256", []byte(line))
		return p
	}
	t.Run("sidecar good", func(t *testing.T) {
		p := withSidecar(t, good+"  2025-05-13-raspios-bookworm-arm64-lite.img.xz\n")
		out, st, err := decode(t, p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		mustEqualFile(t, out, img)
		if !st.Verified || st.ChecksumOrigin != p+".sha256" {
			t.Fatalf("verified = %v from %q, want true from the sidecar", st.Verified, st.ChecksumOrigin)
		}
	})
	t.Run("sidecar picks its line among several", func(t *testing.T) {
		p := withSidecar(t, bad+"  other.img.xz\n"+good+" *2025-05-13-raspios-bookworm-arm64-lite.img.xz\n")
		if _, st, err := decode(t, p, Options{}); err != nil || !st.Verified {
			t.Fatalf("verified = %v, err = %v", st.Verified, err)
		}
	})
	t.Run("sidecar bad", func(t *testing.T) {
		p := withSidecar(t, bad+"  2025-05-13-raspios-bookworm-arm64-lite.img.xz\n")
		_, _, err := decode(t, p, Options{})
		var ce *ChecksumError
		if !errors.As(err, &ce) {
			t.Fatalf("err = %v, want a checksum mismatch", err)
		}
		for _, want := range []string{"expected sha256 " + bad, "(from " + p + ".sha256)", "got " + good} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		}
	})
	t.Run("--sha256 overrides sidecar", func(t *testing.T) {
		p := withSidecar(t, bad+"  2025-05-13-raspios-bookworm-arm64-lite.img.xz\n")
		_, st, err := decode(t, p, Options{SHA256: strings.ToUpper(good)})
		if err != nil || !st.Verified || st.ChecksumOrigin != "--sha256" {
			t.Fatalf("verified = %v from %q, err = %v", st.Verified, st.ChecksumOrigin, err)
		}
	})
	t.Run("--sha256 mismatch", func(t *testing.T) {
		for _, d := range decoders {
			if d.format != XZ {
				continue
			}
			_, _, err := decode(t, src, Options{SHA256: bad, DisableExternalXZ: d.opts.DisableExternalXZ, Workers: d.opts.Workers})
			want := "checksum mismatch for \"" + src + "\": expected sha256 " + bad + " (from --sha256), got " + good
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: err = %v, want %q", d.name, err, want)
			}
		}
	})
}

func TestZipNeedsExactlyOneImage(t *testing.T) {
	t.Parallel()
	need(t, "zip", "zip")
	tests := []struct {
		name    string
		files   []string
		wantErr string
	}{
		{"no image", []string{"README.txt", "boot.bin"}, "holds no .img file (it holds 2 other files: README.txt, boot.bin)"},
		{"two images", []string{"a.img", "b.IMG", "README.txt"}, "holds 2 .img files (a.img, b.IMG): extract the one you want"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for _, f := range tt.files {
				writeFile(t, filepath.Join(dir, f), diskImage(1<<20, 2))
			}
			run(t, dir, append([]string{"zip", "-q", "x.zip"}, tt.files...)...)
			_, _, err := decode(t, filepath.Join(dir, "x.zip"), Options{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestDamagedArchives cuts and corrupts real archives and checks each
// decode path says which it is.
func TestDamagedArchives(t *testing.T) {
	t.Parallel()
	img := diskImage(8<<20, 11)
	for _, d := range decoders {
		if d.format == Raw {
			continue
		}
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			src := compressed(t, dir, img, d.format)
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			truncated := writeFile(t, filepath.Join(dir, "truncated"), data[:len(data)*2/3])
			_, _, err = decode(t, truncated, d.opts)
			var de *DecodeError
			if !errors.As(err, &de) || !de.Truncated {
				t.Fatalf("truncated: err = %v, want a truncation error", err)
			}
			wantMsg := d.format.String() + " stream is truncated: the download may be incomplete; download it again"
			if d.format == Zip {
				wantMsg = "zip archive is truncated"
			}
			if !strings.Contains(err.Error(), wantMsg) {
				t.Errorf("truncated: %q does not contain %q", err, wantMsg)
			}

			corrupt := bytes.Clone(data)
			for i := len(corrupt) / 2; i < len(corrupt)/2+64; i++ {
				corrupt[i] ^= 0x55
			}
			_, _, err = decode(t, writeFile(t, filepath.Join(dir, "corrupt"), corrupt), d.opts)
			if !errors.As(err, &de) || de.Truncated || !strings.Contains(err.Error(), "is corrupt") {
				t.Fatalf("corrupt: err = %v, want a corruption error", err)
			}

			// With a checksum known, the mismatch is the clearer message.
			_, _, err = decode(t, truncated, Options{SHA256: sha256Hex(data), DisableExternalXZ: d.opts.DisableExternalXZ, Workers: d.opts.Workers})
			var ce *ChecksumError
			if !errors.As(err, &ce) {
				t.Fatalf("truncated with checksum: err = %v, want a checksum mismatch", err)
			}
		})
	}
}

func TestWriteToTwice(t *testing.T) {
	t.Parallel()
	src := writeFile(t, filepath.Join(t.TempDir(), "a.img"), diskImage(2<<20, 1))
	s, err := Open(context.Background(), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := s.WriteTo(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteTo(context.Background(), f); err == nil || !strings.Contains(err.Error(), "already read") {
		t.Fatalf("second WriteTo: err = %v", err)
	}
}

// TestXZMultiStream decodes concatenated xz streams (with stream padding)
// through every xz path.
func TestXZMultiStream(t *testing.T) {
	t.Parallel()
	img := diskImage(6<<20, 9)
	first := compressed(t, t.TempDir(), img[:4<<20], XZ)
	second := compressed(t, t.TempDir(), img[4<<20:], XZ)
	a, _ := os.ReadFile(first)
	b, _ := os.ReadFile(second)
	src := writeFile(t, filepath.Join(t.TempDir(), "multi.img.xz"), bytes.Join([][]byte{a, b, {}}, make([]byte, 4)))
	for _, d := range decoders {
		if d.format != XZ {
			continue
		}
		t.Run(d.name, func(t *testing.T) {
			out, st, err := decode(t, src, d.opts)
			if err != nil {
				t.Fatal(err)
			}
			mustEqualFile(t, out, img)
			if !strings.HasPrefix(st.Decoder, d.wantDecoder) {
				t.Errorf("decoder = %q, want %q", st.Decoder, d.wantDecoder)
			}
		})
	}
}

func TestTerminalProgressOnlyOnATerminal(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if p := TerminalProgress(w, "decompressing"); p != nil {
		t.Fatal("progress bar on a pipe: redirected output must stay clean")
	}
}
