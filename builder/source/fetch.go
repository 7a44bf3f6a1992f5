package source

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/nixpi/nixpi/firstboot/inputfile"
)

// maxSidecar bounds how much of a .sha256 file is read.
const maxSidecar = 64 << 10

func (s *Source) openURL(ctx context.Context) error {
	if s.Checksum == "" {
		if err := s.fetchSidecar(ctx); err != nil {
			return err
		}
	}
	resp, err := s.get(ctx, s.Name)
	if err != nil {
		return unreachable(s.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return fmt.Errorf("download base image %q: HTTP %s: check the URL", s.Name, resp.Status)
	}
	s.body = resp.Body
	s.Size = resp.ContentLength // -1 when unknown
	br := bufio.NewReaderSize(resp.Body, 256<<10)
	s.head, err = br.Peek(sniffLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("download base image %q: %w", s.Name, err)
	}
	if len(s.head) == 0 {
		return fmt.Errorf("base image %q is empty", s.Name)
	}
	s.head = append([]byte(nil), s.head...)
	s.input = br
	return nil
}

// fetchSidecar looks for URL+".sha256"; 404 or 410 means there is none.
func (s *Source) fetchSidecar(ctx context.Context) error {
	u, err := url.Parse(s.Name)
	if err != nil {
		return fmt.Errorf("base image URL %q: %w", s.Name, err)
	}
	u.Path += ".sha256"
	if u.RawPath != "" {
		u.RawPath += ".sha256"
	}
	sidecar := u.String()
	resp, err := s.get(ctx, sidecar)
	if err != nil {
		// Asked first, so a server that cannot be reached fails here: say
		// that, not that the checksum file is at fault.
		return unreachable(s.Name, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusGone:
		return nil
	default:
		return fmt.Errorf("download checksum file %q: HTTP %s (pass --sha256 to give the checksum yourself)", sidecar, resp.Status)
	}
	data, err := inputfile.ReadAll(resp.Body, sidecar, "a sha256sum checksum file", maxSidecar)
	if err != nil {
		return fmt.Errorf("download checksum file: %w", err)
	}
	if s.Checksum, err = parseSidecar(data, s.Name); err != nil {
		return fmt.Errorf("checksum file %q: %w", sidecar, err)
	}
	s.ChecksumOrigin = sidecar
	return nil
}

// unreachable is the error for a request that got no HTTP answer at all:
// the name does not resolve, nothing listens, TLS fails, or it timed out.
func unreachable(rawURL string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	host := rawURL
	if u, perr := url.Parse(rawURL); perr == nil {
		host = u.Host
	}
	// The request's own URL (the checksum file's, maybe) would only confuse.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return fmt.Errorf("download base image %q: cannot reach the server %s: %w: check the URL and your network", rawURL, host, err)
}

func (s *Source) get(ctx context.Context, rawURL string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	return s.opts.HTTPClient.Do(req)
}
