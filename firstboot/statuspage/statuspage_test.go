package statuspage

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/journal"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestServesJournalOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w, err := journal.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	w.Append(journal.Entry{Step: "format", Event: journal.Fail, Time: time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC), Boot: 2, Msg: "mkfs.btrfs failed", Hint: "replace the SSD"})
	w.Close()
	os.WriteFile(filepath.Join(dir, "nixpi/FAILED"), []byte("INSTALL STOPPED: step format failed\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "nixpi/nixpi.toml"), []byte("[wlan]\npsk = \"s3cret\"\n"), 0o644)

	stop, addr, err := Start("127.0.0.1:0", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	base := "http://" + addr.String()

	code, body := get(t, base+"/")
	if code != 200 || !strings.Contains(body, "format     fail   mkfs.btrfs failed (hint: replace the SSD)") || !strings.Contains(body, "INSTALL STOPPED") {
		t.Errorf("GET / = %d\n%s", code, body)
	}
	if code, body := get(t, base+"/journal.jsonl"); code != 200 || !strings.Contains(body, `"event":"fail"`) {
		t.Errorf("GET /journal.jsonl = %d %s", code, body)
	}
	for _, path := range []string{"/nixpi.toml", "/nixpi/nixpi.toml", "/../nixpi.toml"} {
		if code, body := get(t, base+path); code != 404 || strings.Contains(body, "s3cret") {
			t.Errorf("GET %s = %d %q; want 404", path, code, body)
		}
	}
}
