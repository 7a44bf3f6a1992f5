// Package statuspage is the optional read-only HTTP status page ([status]
// enable = true): the install journal as text, for a person on the LAN.
// It serves only the journal and the failure report, which never hold
// secrets; it never serves the config.
package statuspage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/journal"
)

// Handler serves GET / (the journal for people) and GET /journal.jsonl.
func Handler(bootDir string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		j, err := journal.ReadFile(bootDir)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		var b bytes.Buffer
		fmt.Fprintln(&b, "nixpi install status")
		fmt.Fprintln(&b)
		journal.Print(&b, j)
		if marker, err := os.ReadFile(filepath.Join(bootDir, cardpath.Failed)); err == nil {
			fmt.Fprintf(&b, "\n%s", marker)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Refresh", "10")
		w.Write(b.Bytes())
	})
	mux.HandleFunc("GET /journal.jsonl", func(w http.ResponseWriter, r *http.Request) {
		jp, _ := journal.Paths(bootDir)
		data, err := os.ReadFile(jp)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jsonl")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(data)
	})
	return mux
}

// Start listens on addr and serves the page until stop is called.
func Start(addr, bootDir string) (stop func(), bound net.Addr, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("status page: %w", err)
	}
	srv := &http.Server{Handler: Handler(bootDir), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, ln.Addr(), nil
}
