package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRunOrderFlipsTheTwoBuildsEveryOtherRun(t *testing.T) {
	// xz, new, baseline, Go decoder: the Go decoder and xz keep their places.
	for run, want := range [][]int{{0, 1, 2, 3}, {0, 2, 1, 3}, {0, 1, 2, 3}, {0, 2, 1, 3}} {
		if got := runOrder(run, 4, 1, 2); !slices.Equal(got, want) {
			t.Errorf("run %d: order %v, want %v", run, got, want)
		}
	}
	if got := runOrder(1, 3, 1, -1); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("without a baseline, run 1: order %v, want as listed", got)
	}
	// Over an even number of pairs each binary runs first as often.
	newFirst := 0
	for run := range 4 {
		if runOrder(run, 3, 1, 2)[1] == 1 {
			newFirst++
		}
		if baselineFirst(run) != (runOrder(run, 3, 1, 2)[1] == 2) {
			t.Errorf("run %d: baselineFirst %v disagrees with the order %v", run, baselineFirst(run), runOrder(run, 3, 1, 2))
		}
	}
	if newFirst != 2 {
		t.Errorf("new ran first in %d of 4 pairs, want 2", newFirst)
	}
}

func seconds(xs ...float64) []time.Duration {
	var d []time.Duration
	for _, x := range xs {
		d = append(d, time.Duration(x*float64(time.Second)))
	}
	return d
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestJudgePairsByRunAndDecidesOnTheMedian(t *testing.T) {
	for _, tc := range []struct {
		name              string
		new, base         []time.Duration
		ratios            []float64
		median, low, high float64
		slower, noisy     bool
	}{
		{
			// The figures: 1.06x, 0.99-1.09 over 4 pairs.
			name: "within the noise", new: seconds(6.93, 6.36, 6.60, 6.80), base: seconds(6.36, 6.42, 6.29, 6.36),
			ratios: []float64{6.93 / 6.36, 6.36 / 6.42, 6.60 / 6.29, 6.80 / 6.36},
			median: (6.60/6.29 + 6.80/6.36) / 2, low: 6.36 / 6.42, high: 6.93 / 6.36,
		},
		{
			// One pair hit by a QEMU run does not fail the build.
			name: "one slow pair", new: seconds(6, 9, 6), base: seconds(6, 6, 6),
			ratios: []float64{1, 1.5, 1}, median: 1, low: 1, high: 1.5, noisy: true,
		},
		{
			name: "slower", new: seconds(7.2, 7.0, 7.3, 7.1), base: seconds(6, 6.1, 6.2, 6),
			ratios: []float64{1.2, 7.0 / 6.1, 7.3 / 6.2, 7.1 / 6},
			median: (7.3/6.2 + 7.1/6) / 2, low: 7.0 / 6.1, high: 1.2, slower: true,
		},
		{
			// Just at the limit is within it; the pairs order the ratios, not the sorted times.
			name: "at the limit", new: seconds(1.1, 5.5), base: seconds(1, 5),
			ratios: []float64{1.1, 1.1}, median: 1.1, low: 1.1, high: 1.1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := judge(tc.new, tc.base, guardLimit)
			if err != nil {
				t.Fatal(err)
			}
			if len(v.ratios) != len(tc.ratios) {
				t.Fatalf("ratios %v, want %v", v.ratios, tc.ratios)
			}
			for i := range v.ratios {
				if !near(v.ratios[i], tc.ratios[i]) {
					t.Errorf("pair %d: ratio %.6f, want %.6f", i+1, v.ratios[i], tc.ratios[i])
				}
			}
			if !near(v.median, tc.median) || !near(v.low, tc.low) || !near(v.high, tc.high) {
				t.Errorf("median %.6f range %.6f-%.6f, want %.6f %.6f-%.6f", v.median, v.low, v.high, tc.median, tc.low, tc.high)
			}
			if v.slower != tc.slower || v.noisy != tc.noisy {
				t.Errorf("slower %v noisy %v, want %v %v", v.slower, v.noisy, tc.slower, tc.noisy)
			}
			if err := v.err("/tmp/old/nixpi"); (err != nil) != tc.slower {
				t.Errorf("err %v, want an error only when slower", err)
			}
			summary := v.summary()
			if want := map[bool]string{true: "SLOWER", false: "within the noise"}[tc.slower]; !strings.Contains(summary, want) {
				t.Errorf("summary %q does not say %q", summary, want)
			}
			if strings.Contains(summary, "noisy") != tc.noisy {
				t.Errorf("summary %q: noisy should be said only when the range is wide", summary)
			}
		})
	}
}

func TestJudgeErrorNamesTheBaselineAndTheFix(t *testing.T) {
	v, err := judge(seconds(7, 7), seconds(6, 6), guardLimit)
	if err != nil {
		t.Fatal(err)
	}
	msg := v.err("/tmp/old dir/nixpi").Error()
	for _, want := range []string{`"/tmp/old dir/nixpi"`, "1.167x", "2 pairs", "limit 1.10", "git bisect"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
}

func TestJudgeRefusesWhatIsNotPairs(t *testing.T) {
	for name, tc := range map[string]struct{ new, base []time.Duration }{
		"no pairs":      {nil, nil},
		"unequal":       {seconds(6, 6), seconds(6)},
		"zero baseline": {seconds(6), seconds(0)},
		"negative new":  {[]time.Duration{-time.Second}, seconds(6)},
	} {
		if _, err := judge(tc.new, tc.base, guardLimit); err == nil {
			t.Errorf("%s: judge accepted %v and %v", name, tc.new, tc.base)
		}
	}
}

func TestMedianFloat(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{1.09, 0.99, 1.05, 1.07}, 1.06},
	} {
		xs := slices.Clone(tc.xs)
		if got := medianFloat(xs); !near(got, tc.want) {
			t.Errorf("median of %v = %v, want %v", tc.xs, got, tc.want)
		}
		if !slices.Equal(xs, tc.xs) {
			t.Errorf("median reordered its input: %v", xs)
		}
	}
}
