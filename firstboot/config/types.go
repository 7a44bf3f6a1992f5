package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Size is a byte count written in the file as a string with an IEC unit
// ("500MiB", "1GiB"). A bare "0" means zero.
type Size int64

const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

var sizeUnits = []struct {
	suffix string
	factor Size
}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}, {"B", 1}}

// ParseSize parses "500MiB", "1GiB", "0".
func ParseSize(s string) (Size, error) {
	if s == "0" {
		return 0, nil
	}
	for _, u := range sizeUnits {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n < 0 || num == "" || num[0] == '+' {
			break
		}
		if n > int64(1<<62)/int64(u.factor) {
			return 0, fmt.Errorf("size %q is too large", s)
		}
		return Size(n) * u.factor, nil
	}
	return 0, fmt.Errorf("size %q: write a whole number with an IEC unit, e.g. \"500MiB\" or \"1GiB\" (units: B, KiB, MiB, GiB, TiB)", s)
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String gives the largest IEC unit that divides the size exactly.
func (s Size) String() string {
	if s == 0 {
		return "0"
	}
	for _, u := range sizeUnits {
		if s%u.factor == 0 {
			return strconv.FormatInt(int64(s/u.factor), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// Approx is the size rounded for people to read: "512 B", "1.5 GiB".
func (s Size) Approx() string {
	if s < KiB {
		return fmt.Sprintf("%d B", int64(s))
	}
	div, exp := KiB, 0
	for m := s / KiB; m >= KiB; m /= KiB {
		div *= KiB
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(s)/float64(div), "KMGTPE"[exp])
}

// SwapSize is "ram" (the size of the Pi's memory, rounded up to MiB, and at
// least MinMemoryAndSwap minus it) or a Size.
type SwapSize struct {
	RAM   bool
	Bytes Size
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *SwapSize) UnmarshalText(b []byte) error {
	if string(b) == "ram" {
		*s = SwapSize{RAM: true}
		return nil
	}
	v, err := ParseSize(string(b))
	if err != nil {
		return fmt.Errorf("%w, or \"ram\" for the size of the Pi's memory", err)
	}
	*s = SwapSize{Bytes: v}
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s SwapSize) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s SwapSize) String() string {
	if s.RAM {
		return "ram"
	}
	return s.Bytes.String()
}

// Resolve gives the swap size in bytes for a machine with ramBytes of memory.
func (s SwapSize) Resolve(ramBytes int64) Size {
	if !s.RAM {
		return s.Bytes
	}
	ram := (Size(ramBytes) + MiB - 1) / MiB * MiB
	// Evaluating NixOS allocates 1.8-2 GiB (Nix issue 5200): memory and
	// swap together get at least 4 GiB, so a 1 GiB Pi gets 3 GiB of swap.
	return max(ram, MinMemoryAndSwap-ram)
}

// MinMemoryAndSwap is what memory and swap together must give a NixOS
// evaluation; swap_size = "ram" and the out-of-memory hint both use it.
const MinMemoryAndSwap = 4 * GiB

// Secret is a value that must never appear in output: String, GoString and
// MarshalJSON redact it. Reveal gives the value to the one place that needs it.
type Secret string

const redacted = "(redacted)"

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// MarshalJSON redacts, so a Config can be printed as JSON safely.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }

// Reveal returns the secret value itself.
func (s Secret) Reveal() string { return string(s) }
