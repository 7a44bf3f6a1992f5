package qemu

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nixpi/nixpi/firstboot/system"
)

// The stand-in nixpkgs (testdata/e2e/standin-nixpkgs) is the one thing the
// QEMU run doubles: the guest reaches nothing but the host, so the harness
// serves it the stand-in as the nixpkgs tarball, and an empty binary cache.

// StandInBusybox is where the stand-in tree expects its one binary, the
// static busybox that builds every stand-in derivation; StandInKernelDir
// where a bootable stand-in has its kernel (StandInKernel's files).
const (
	StandInBusybox   = "bootstrap/busybox"
	StandInKernelDir = "bootstrap/kernel"
)

// Bootstrap is what the harness adds to the stand-in tree: a static busybox
// for the guest, and optionally a kernel with modules (a StandInKernel's
// Dir), which makes the installed system boot.
type Bootstrap struct {
	Busybox string
	Kernel  string
}

// StandIn is a staged stand-in nixpkgs: the tree with its busybox, and the
// pins a config needs to fetch it.
type StandIn struct {
	Dir string
	// Rev is the stand-in's revision (.git-revision), the config's
	// nixos.nixpkgs_rev.
	Rev string
	// NARHash is the unpacked tree's NAR hash (nix-hash --base32), the
	// config's nixos.nixpkgs_sha256: what fetchTarball verifies.
	NARHash string
	// Tarball is the tree as a .tar.gz with one top directory, as GitHub
	// serves nixpkgs.
	Tarball []byte
	// Bootable: the tree has a kernel (Bootstrap.Kernel), so the system it
	// builds boots; without one its kernel and initrd are text.
	Bootable bool
}

var hexRev = regexp.MustCompile(`^[0-9a-f]{40}$`)

// StageStandIn copies the stand-in tree from src into dst with the
// bootstrap files (for the guest's architecture) in bootstrap/, and pins it:
// the NAR hash comes from the host's nix-hash, the real tool.
func StageStandIn(ctx context.Context, run system.Runner, nixHash, src string, boot Bootstrap, dst string) (*StandIn, error) {
	if err := Check(nixHash); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dst); err != nil {
		return nil, err
	}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir() && rel == filepath.FromSlash(StandInKernelDir):
			return fs.SkipDir // a kernel left there by hand; only boot.Kernel's is staged
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case rel == filepath.FromSlash(StandInBusybox):
			return nil // a host-side test's copy; the staged one is boot.Busybox
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, 0o644)
		default:
			return fmt.Errorf("stand-in nixpkgs: %s is neither a file nor a directory", p)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("stage the stand-in nixpkgs: %w", err)
	}
	bb, err := os.ReadFile(boot.Busybox)
	if err != nil {
		return nil, fmt.Errorf("stage the stand-in nixpkgs: its busybox: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dst, StandInBusybox), bb, 0o755); err != nil {
		return nil, err
	}
	if boot.Kernel != "" {
		if err := copyTree(boot.Kernel, filepath.Join(dst, StandInKernelDir)); err != nil {
			return nil, fmt.Errorf("stage the stand-in nixpkgs: its kernel: %w", err)
		}
	}
	rev, err := os.ReadFile(filepath.Join(dst, ".git-revision"))
	if err != nil {
		return nil, fmt.Errorf("stand-in nixpkgs: %w", err)
	}
	s := &StandIn{Dir: dst, Rev: strings.TrimSpace(string(rev)), Bootable: boot.Kernel != ""}
	if !hexRev.MatchString(s.Rev) {
		return nil, fmt.Errorf("stand-in nixpkgs: .git-revision is %q, want 40 hex digits", s.Rev)
	}
	out, err := run.Output(ctx, nixHash, "--type", "sha256", "--base32", dst)
	if err != nil {
		return nil, fmt.Errorf("stand-in nixpkgs: NAR hash: %w", err)
	}
	if s.NARHash = strings.TrimSpace(string(out)); len(s.NARHash) != 52 {
		return nil, fmt.Errorf("stand-in nixpkgs: %s printed %q, want a base32 sha256", nixHash, s.NARHash)
	}
	if s.Tarball, err = Tarball(dst, "stand-in-nixpkgs-"+s.Rev[:7]); err != nil {
		return nil, err
	}
	return s, nil
}

// Tarball packs dir under one top directory, deterministically: sorted
// entries, zero times, root-owned, modes 0755 or 0644 by the executable
// bit (all a NAR keeps).
func Tarball(dir, top string) ([]byte, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("tarball: %s is neither a file nor a directory", p)
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(paths)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf) // no name, zero time in the header
	tw := tar.NewWriter(gz)
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(filepath.Join(top, rel)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case info.IsDir():
			h.Typeflag, h.Mode, h.Name = tar.TypeDir, 0o755, h.Name+"/"
		case info.Mode()&0o111 != 0:
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o755, info.Size()
		default:
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, info.Size()
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			if _, err := tw.Write(data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// The guest reaches the host's server at this address (a guestfwd of QEMU's
// restricted user network); nothing else answers it.
const (
	GuestServerAddr = "10.0.2.100"
	GuestServerPort = 80
)

// Paths the stand-in server answers.
const (
	StandInCachePath   = "/stand-in-cache"
	standInTarballPath = "/stand-in-nixpkgs/"
)

// StandInServer serves the stand-in tarball and an empty binary cache
// (nix-cache-info; every .narinfo is "not found", so Nix builds everything
// in the guest) on a host port, and records each request.
type StandInServer struct {
	standIn  *StandIn
	listener net.Listener
	server   *http.Server
	mu       sync.Mutex
	requests []string
}

// ServeStandIn starts the server on 127.0.0.1 at a free port.
func ServeStandIn(s *StandIn) (*StandInServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("stand-in server: %w", err)
	}
	srv := &StandInServer{standIn: s, listener: ln}
	// Short idle connections: each one holds a proxy process (QEMU's
	// guestfwd runs one per connection).
	srv.server = &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 5 * time.Second}
	go srv.server.Serve(ln)
	return srv, nil
}

// Port is the host port the server listens on.
func (s *StandInServer) Port() int { return s.listener.Addr().(*net.TCPAddr).Port }

// Close stops the server.
func (s *StandInServer) Close() error { return s.server.Close() }

// TarballURL is the tarball's URL as the guest reaches it.
func (s *StandInServer) TarballURL() string {
	return fmt.Sprintf("http://%s%s%s.tar.gz", GuestServerAddr, standInTarballPath, s.standIn.Rev)
}

// CacheURL is the empty binary cache's URL as the guest reaches it.
func (s *StandInServer) CacheURL() string {
	return fmt.Sprintf("http://%s%s", GuestServerAddr, StandInCachePath)
}

// Requests returns "METHOD PATH STATUS" for every request so far.
func (s *StandInServer) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// standInCacheInfo is an empty binary cache's nix-cache-info.
const standInCacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"

func (s *StandInServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status := http.StatusOK
	switch {
	case r.URL.Path == standInTarballPath+s.standIn.Rev+".tar.gz":
		w.Header().Set("Content-Type", "application/gzip")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(s.standIn.Tarball))
	case r.URL.Path == StandInCachePath+"/nix-cache-info":
		w.Header().Set("Content-Type", "text/x-nix-cache-info")
		w.Write([]byte(standInCacheInfo))
	default:
		status = http.StatusNotFound
		http.NotFound(w, r)
	}
	s.mu.Lock()
	s.requests = append(s.requests, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, status))
	s.mu.Unlock()
}

// GuestForward is QEMU's guestfwd rule sending the guest's connections to
// GuestServerAddr:GuestServerPort to the host port: one proxy process (the
// host's static busybox nc) per connection, as a chardev would carry only
// one.
func GuestForward(busybox string, hostPort int) string {
	return fmt.Sprintf("tcp:%s:%d-cmd:%s nc 127.0.0.1 %d", GuestServerAddr, GuestServerPort, busybox, hostPort)
}
