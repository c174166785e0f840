package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Pipeline3 (weft's bench/pipeline.c): n items through a pipeline of three
// stages of two goroutines each, written as Go's "Pipelines and
// cancellation" article writes pipelines: each stage is a function that
// takes an input channel and returns its output channel; its goroutines
// range over the input (fan-out), send into the one output (fan-in), and
// a WaitGroup closes the output when the last of them is done. Every send
// also watches the context, so a cancelled pipeline unwinds (the article's
// done channel; here ctx.Done()). The stages are +1, *2 and ^0x5555; every
// channel, the generator's included, has a buffer of 128; no stage keeps
// order. Timed from before the generator starts until the n-th item is
// received; the count and the sum are checked after the clock stops.
const (
	pipeWorkers = 2
	pipeBuffer  = 128
	pipeXor     = 0x5555
)

// pipeGen sends 0..n-1 and closes its channel.
func pipeGen(ctx context.Context, n int) <-chan int {
	out := make(chan int, pipeBuffer)
	go func() {
		defer close(out)
		for i := 0; i < n; i++ {
			select {
			case out <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// pipeStage runs f on every item of in, in pipeWorkers goroutines.
func pipeStage(ctx context.Context, in <-chan int, f func(int) int) <-chan int {
	out := make(chan int, pipeBuffer)
	var wg sync.WaitGroup
	wg.Add(pipeWorkers)
	for w := 0; w < pipeWorkers; w++ {
		go func() {
			defer wg.Done()
			for v := range in {
				select {
				case out <- f(v):
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

func pipeInc(v int) int  { return v + 1 }
func pipeDbl(v int) int  { return v * 2 }
func pipeXorF(v int) int { return v ^ pipeXor }

func benchPipeline3(n int) time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var d time.Duration
	got, sum := 0, 0
	start := time.Now()
	out := pipeStage(ctx, pipeStage(ctx, pipeStage(ctx, pipeGen(ctx, n), pipeInc), pipeDbl), pipeXorF)
	for v := range out {
		sum += v
		got++
		if got == n {
			d = time.Since(start)
		}
	}
	want := 0
	for i := 0; i < n; i++ {
		want += ((i + 1) * 2) ^ pipeXor
	}
	if got != n || sum != want {
		panic(fmt.Sprintf("Pipeline3: received %d items summing to %d, want %d summing to %d",
			got, sum, n, want))
	}
	return d
}
