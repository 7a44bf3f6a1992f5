package source

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseSidecar: parseSidecar never panics on a downloaded checksum
// file, and a checksum it returns is 64 lowercase hex digits that the file
// holds.
func FuzzParseSidecar(f *testing.F) {
	sum := strings.Repeat("ab", 32)
	other := strings.Repeat("cd", 32)
	f.Add([]byte(sum+"  raspios.img.xz\n"), "raspios.img.xz")
	f.Add([]byte(sum+" *raspios.img.xz\n"+other+"  other.img.xz\n"), "https://example.org/images/raspios.img.xz?x=1#y")
	f.Add([]byte("# comment\n\n"+strings.ToUpper(sum)+"  a b.img\n"+other+"  a b.img\n"), "/srv/a b.img")
	f.Add([]byte("xyz\n"), "base.img")
	f.Fuzz(func(t *testing.T, data []byte, src string) {
		got, err := parseSidecar(data, src)
		if err != nil {
			return
		}
		if len(got) != 64 || strings.ToLower(got) != got || strings.Trim(got, "0123456789abcdef") != "" {
			t.Fatalf("checksum %q is not 64 lowercase hex digits", got)
		}
		if !bytes.Contains(bytes.ToLower(data), []byte(got)) {
			t.Fatalf("checksum %q is not in the file", got)
		}
	})
}

func TestParseSidecar(t *testing.T) {
	t.Parallel()
	sum, other := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	for _, tc := range []struct {
		data, src, want, wantErr string
	}{
		{sum + "  renamed.img\n", "base.img", sum, ""},
		{sum + "  a.img\n" + other + " *base.img\n", "/x/base.img", other, ""},
		{sum + "  base.img\n" + sum + "  base.img\n", "base.img", sum, ""},
		{sum + "  base.img\n" + other + "  base.img\n", "base.img", "", `"base.img" is listed twice with different checksums`},
		{sum + "  a.img\n" + other + "  b.img\n", "base.img", "", `2 checksums but none for "base.img"`},
		{"# nothing\n", "base.img", "", "no checksum in it"},
	} {
		got, err := parseSidecar([]byte(tc.data), tc.src)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %q, %v; want error %q", tc.data, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.data, got, err, tc.want)
		}
	}
}
