package config

import (
	"flag"
	"os"
	"testing"
)

// TestMain bounds how long the fuzzer minimizes each new input. Go's
// minimizer tries on the order of n² candidates for an n-byte input, and
// FuzzParse's execution (three TOML decodes and an encode) takes about half
// a millisecond, so for an input the size of the example config (2.6 KiB)
// minimizing runs into its default 60 s cap, for every input that finds new
// coverage. With one worker (-parallel 1) fuzzing stops meanwhile: 5 to 12
// executions in 20 s. A few seconds minimize the small inputs fully and
// cut the rest short. -fuzzminimizetime on the command line still wins.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		if err := flag.Set("test.fuzzminimizetime", "2s"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
