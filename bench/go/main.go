// Go counterparts of weft-bench's pattern cases (issue 6), in a plain main
// package (not `go test`), so that bench/go/vs-patterns can run them against
// weft-bench the way ../shared/bin/vs-go runs the reference suite:
// PoolSubmit (workpool.go) and Pipeline3 (pipeline.go).
//
// Usage: weft-bench-go -case NAME -threads T [-reps 5] [-target 700ms] [-n N]
// Prints one line per repetition in Go benchmark format:
//
//	BenchmarkName-T  N  X ns/op
//
// The flags, runTimed and report are those of the Go reference suite
// (../shared/anchors/go/main.go), unchanged, so both programs calibrate N
// and print the same way. Each case lives in its own file.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"
)

var (
	flagCase    = flag.String("case", "", "case name (see list below)")
	flagThreads = flag.Int("threads", 1, "GOMAXPROCS")
	flagReps    = flag.Int("reps", 5, "repetitions")
	flagTarget  = flag.Duration("target", 700*time.Millisecond, "target wall time per repetition")
	flagN       = flag.Int("n", 0, "fixed op count (skips calibration)")
)

var sink int64

// ---------------------------------------------------------------- harness

// timed benchmark: f(n) performs exactly n ops and returns the measured time
// (setup/teardown excluded). q: n is rounded up to a multiple of q.
func runTimed(name string, q int, f func(n int) time.Duration) {
	n := *flagN
	if n == 0 {
		n = q
		for {
			d := f(n)
			if d >= 100*time.Millisecond || n >= 1<<30 {
				n = int(float64(n) * float64(*flagTarget) / float64(d))
				break
			}
			mult := 10.0
			if d > 0 {
				mult = float64(150*time.Millisecond) / float64(d)
				if mult > 100 {
					mult = 100
				}
				if mult < 2 {
					mult = 2
				}
			}
			n = int(float64(n) * mult)
			n = (n + q - 1) / q * q
		}
	}
	n = (n + q - 1) / q * q
	if n < q {
		n = q
	}
	for r := 0; r < *flagReps; r++ {
		d := f(n)
		report(name, n, float64(d.Nanoseconds())/float64(n), "")
	}
}

func report(name string, n int, nsop float64, extra string) {
	fmt.Printf("Benchmark%s-%d\t%d\t%.2f ns/op%s\n", name, *flagThreads, n, nsop, extra)
}

func main() {
	flag.Parse()
	runtime.GOMAXPROCS(*flagThreads)
	switch *flagCase {
	case "PoolSubmit":
		runTimed("PoolSubmit", 8, benchPoolSubmit)
	case "Pipeline3":
		runTimed("Pipeline3", 1, benchPipeline3)
	default:
		fmt.Fprintln(os.Stderr, "cases: PoolSubmit Pipeline3")
		os.Exit(2)
	}
}
