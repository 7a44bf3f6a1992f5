package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"

	"github.com/nixpi/nixpi/firstboot/engine"
)

// Retry is how Download retries: Attempts tries in all, waiting First, then
// twice as long each time, at most Max.
type Retry struct {
	Attempts int
	First    time.Duration
	Max      time.Duration
}

// DefaultRetry suits a Pi on a flaky link: 6 tries over about 2.5 minutes.
var DefaultRetry = Retry{Attempts: 6, First: 5 * time.Second, Max: 60 * time.Second}

// permanentError is an answer that retrying cannot change (404, 403...).
type permanentError struct{ error }

// Download fetches url into dest (under the root), replacing it only once
// the whole file arrived and, when wantSHA256 is set, matched it.
func Download(ctx context.Context, env *engine.Env, client *http.Client, url, dest, wantSHA256 string, retry Retry) error {
	if client == nil {
		client = http.DefaultClient
	}
	if retry.Attempts < 1 {
		retry.Attempts = 1
	}
	wait := retry.First
	var err error
	for attempt := 1; attempt <= retry.Attempts; attempt++ {
		err = fetchOnce(ctx, client, url, env.Path(dest), wantSHA256)
		if err == nil {
			env.Logf("downloaded %s", url)
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) || ctx.Err() != nil || attempt == retry.Attempts {
			break
		}
		env.Logf("download %s: attempt %d of %d failed: %v; retrying in %s", url, attempt, retry.Attempts, err, wait)
		if werr := env.Wait(ctx, wait); werr != nil {
			return fmt.Errorf("download %s: %w", url, werr)
		}
		wait = min(wait*2, retry.Max)
	}
	return engine.WithHint(fmt.Errorf("download %s: %w", url, err),
		"check the Pi's network connection and that the clock is right (no RTC: it needs NTP)")
}

func fetchOnce(ctx context.Context, client *http.Client, url, dest, wantSHA256 string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return permanentError{err}
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("server answered %s", resp.Status)
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusRequestTimeout {
			return permanentError{err}
		}
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return permanentError{err}
	}
	out, err := renameio.NewPendingFile(dest, renameio.WithPermissions(0o644))
	if err != nil {
		return permanentError{err}
	}
	defer out.Cleanup()
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, sum), resp.Body); err != nil {
		return err
	}
	if got := hex.EncodeToString(sum.Sum(nil)); wantSHA256 != "" && got != wantSHA256 {
		return fmt.Errorf("sha256 is %s, want %s", got, wantSHA256)
	}
	return out.CloseAtomicallyReplace()
}
