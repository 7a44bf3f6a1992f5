package builder

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

// A base given as a URL is downloaded, checked against the sidecar
// published next to it, and built like a local one. The server is local:
// this machine may not reach the internet.
func TestBuildFromURL(t *testing.T) {
	t.Parallel()
	img := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, FATSize: fixture.MinFATSize})
	if out, err := exec.Command("xz", "-T2", "-0", "-k", img.Path).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v\n%s", err, out)
	}
	xzData, err := os.ReadFile(img.Path + ".xz")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256Hex(xzData)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/images/raspios.img.xz":
			w.Write(xzData)
		case "/images/raspios.img.xz.sha256":
			w.Write([]byte(sum + "  raspios.img.xz\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	out := filepath.Join(t.TempDir(), "card.img")
	res, err := Build(context.Background(), testOptions(t, srv.URL+"/images/raspios.img.xz", out))
	if err != nil {
		t.Fatal(err)
	}
	buildertest.CheckCard(t, img.Path, out)
	if b := res.Manifest.Base; b.SHA256 != sum || b.Format != "xz" {
		t.Errorf("manifest base %+v, want raspios.img.xz sha256 %s", b, sum)
	}

	// A URL that is not there fails with the status and leaves nothing.
	out2 := filepath.Join(t.TempDir(), "card.img")
	_, err = Build(context.Background(), testOptions(t, srv.URL+"/images/missing.img.xz", out2))
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Build from a missing URL: %v", err)
	}
	assertOnly(t, filepath.Dir(out2), "nixpi.toml")
}
