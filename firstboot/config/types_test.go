package config

import "testing"

func TestSizeApprox(t *testing.T) {
	t.Parallel()
	for in, want := range map[Size]string{0: "0 B", 1023: "1023 B", KiB: "1.0 KiB", 1536 * KiB: "1.5 MiB", 500 * MiB: "500.0 MiB", 16 * GiB: "16.0 GiB", 3 * TiB / 2: "1.5 TiB"} {
		if got := in.Approx(); got != want {
			t.Errorf("Size(%d).Approx() = %q, want %q", int64(in), got, want)
		}
	}
}
