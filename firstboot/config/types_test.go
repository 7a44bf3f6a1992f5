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

// swap_size = "ram" gives memory and swap together at least 4 GiB, which a
// NixOS evaluation needs (Nix issue 5200): a 1 GiB Pi gets 3 GiB of swap.
func TestSwapRAMIsAtLeastFourGiBWithMemory(t *testing.T) {
	t.Parallel()
	ram := SwapSize{RAM: true}
	for mem, want := range map[int64]Size{
		1 << 30:           3 * GiB,
		(1 << 30) - 12345: 3 * GiB, // rounded up to MiB first
		2 << 30:           2 * GiB,
		4 << 30:           4 * GiB,
		8 << 30:           8 * GiB,
	} {
		if got := ram.Resolve(mem); got != want {
			t.Errorf("swap for %d bytes of memory = %s, want %s", mem, got, want)
		}
	}
}
