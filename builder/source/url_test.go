package source

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// serve serves files by name from memory on 127.0.0.1 and records which
// paths were requested.
type server struct {
	files map[string][]byte
	mu    sync.Mutex
	hits  []string
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.hits = append(s.hits, r.URL.Path)
	s.mu.Unlock()
	if r.URL.Path == "/broken.img.xz.sha256" {
		http.Error(w, "boom", http.StatusInternalServerError)
		return
	}
	data, ok := s.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	// No Content-Length for .gz: the total is then unknown, as with chunked downloads.
	if strings.HasSuffix(r.URL.Path, ".gz") {
		w.Header().Set("Transfer-Encoding", "chunked")
		w.Write(data)
		return
	}
	http.ServeContent(w, r, r.URL.Path, timeZero, strings.NewReader(string(data)))
}

func TestURL(t *testing.T) {
	t.Parallel()
	img := diskImage(8<<20, 5)
	read := func(p string) []byte {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	xzData := read(compressed(t, t.TempDir(), img, XZ))
	zipData := read(compressed(t, t.TempDir(), img, Zip))
	gzData := read(compressed(t, t.TempDir(), img, Gzip))
	srv := &server{files: map[string][]byte{
		"/raspios.img.xz":        xzData,
		"/raspios.img.xz.sha256": []byte(sha256Hex(xzData) + "  raspios.img.xz\n"),
		"/nosum.img.xz":          xzData,
		"/wrong.img.xz":          xzData,
		"/wrong.img.xz.sha256":   []byte(strings.Repeat("ab", 32) + "  wrong.img.xz\n"),
		"/broken.img.xz":         xzData,
		"/image.zip":             zipData,
		"/image.img.gz":          gzData,
	}}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)

	for _, d := range decoders {
		if d.format != XZ {
			continue
		}
		t.Run("xz with sidecar via "+d.name, func(t *testing.T) {
			var last, total int64
			opts := d.opts
			opts.Progress = func(done, n int64) { last, total = done, n }
			out, st, err := decode(t, ts.URL+"/raspios.img.xz", opts)
			if err != nil {
				t.Fatal(err)
			}
			mustEqualFile(t, out, img)
			if !st.Verified || st.ChecksumOrigin != ts.URL+"/raspios.img.xz.sha256" {
				t.Errorf("verified = %v from %q", st.Verified, st.ChecksumOrigin)
			}
			// A download cannot seek: the parallel decoder needs the index at the end.
			if d.opts.DisableExternalXZ && st.Decoder != "sequential xz" {
				t.Errorf("decoder = %q for a URL, want sequential xz", st.Decoder)
			}
			if last != int64(len(xzData)) || total != int64(len(xzData)) {
				t.Errorf("progress ended at %d of %d, want %d of %d", last, total, len(xzData), len(xzData))
			}
		})
	}
	t.Run("no sidecar (404)", func(t *testing.T) {
		_, st, err := decode(t, ts.URL+"/nosum.img.xz", Options{})
		if err != nil || st.Verified {
			t.Fatalf("verified = %v, err = %v", st.Verified, err)
		}
	})
	t.Run("sidecar mismatch", func(t *testing.T) {
		_, _, err := decode(t, ts.URL+"/wrong.img.xz", Options{})
		var ce *ChecksumError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "(from "+ts.URL+"/wrong.img.xz.sha256)") {
			t.Fatalf("err = %v, want a mismatch naming the sidecar URL", err)
		}
	})
	t.Run("sidecar server error", func(t *testing.T) {
		_, _, err := decode(t, ts.URL+"/broken.img.xz", Options{})
		if err == nil || !strings.Contains(err.Error(), "HTTP 500") || !strings.Contains(err.Error(), "--sha256") {
			t.Fatalf("err = %v, want the HTTP status and the --sha256 way out", err)
		}
	})
	t.Run("image 404", func(t *testing.T) {
		_, _, err := decode(t, ts.URL+"/missing.img.xz", Options{})
		if err == nil || !strings.Contains(err.Error(), "HTTP 404 Not Found: check the URL") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("zip is downloaded to a temporary file", func(t *testing.T) {
		tmp := t.TempDir()
		out, st, err := decode(t, ts.URL+"/image.zip", Options{TempDir: tmp, SHA256: sha256Hex(zipData)})
		if err != nil {
			t.Fatal(err)
		}
		mustEqualFile(t, out, img)
		if !st.Verified {
			t.Error("not verified")
		}
		if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) != 0 {
			t.Errorf("temporary download left behind: %v", left)
		}
	})
	t.Run("chunked gzip, size unknown", func(t *testing.T) {
		var total int64
		out, _, err := decode(t, ts.URL+"/image.img.gz", Options{Progress: func(_, n int64) { total = n }})
		if err != nil {
			t.Fatal(err)
		}
		mustEqualFile(t, out, img)
		if total != -1 {
			t.Errorf("progress total = %d, want -1 (unknown)", total)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := Open(ctx, ts.URL+"/nosum.img.xz", Options{DisableExternalXZ: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		f, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cancel()
		if _, err := s.WriteTo(ctx, f); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}
