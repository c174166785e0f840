package main

import (
	"sync"
	"time"
)

// A job, as the learning material's worker pools write it: an id and the
// function to run on it. The function here is trivial, so what is measured is
// the pool: a send on the job channel, a receive by a worker, the call, and
// the WaitGroup that tells the submitter all jobs are done.
type job struct {
	id int
	fn func(id int) int
}

func double(id int) int { return 2 * id }

// PoolSubmit: n trivial jobs submitted one by one through a pool of 8 worker
// goroutines ranging over a buffered job channel of 1024 (submit blocks when
// it is full: backpressure). Timed from the first submit until all n jobs
// have completed; the pool is started before and stopped after the clock
// runs, and the results are checked outside it.
func benchPoolSubmit(n int) time.Duration {
	const workers, queue = 8, 1024
	jobs := make(chan job, queue)
	sums := make([]int, workers) // sums[w] is written by worker w only
	var done sync.WaitGroup      // one count per job
	var exited sync.WaitGroup    // one count per worker
	exited.Add(workers)
	for w := 0; w < workers; w++ {
		go func(w int) {
			defer exited.Done()
			for j := range jobs {
				sums[w] += j.fn(j.id)
				done.Done()
			}
		}(w)
	}

	done.Add(n)
	start := time.Now()
	for i := 0; i < n; i++ {
		jobs <- job{id: i, fn: double}
	}
	done.Wait()
	d := time.Since(start)

	close(jobs)
	exited.Wait()
	total := 0
	for _, s := range sums {
		total += s
	}
	if total != n*(n-1) {
		panic("pool: lost or repeated jobs")
	}
	sink += int64(total)
	return d
}
