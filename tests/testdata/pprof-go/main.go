// Command pprofgo burns CPU in a few functions under runtime/pprof and writes the CPU profile to
// the path given as its only argument. Outpost's integration tests ingest the file and compare
// the flame graph with `go tool pprof -top` on the same file.
package main

import (
	"crypto/sha256"
	"log"
	"os"
	"runtime/pprof"
	"sort"
	"time"
)

var sink uint64

//go:noinline
func hashLoop(d time.Duration) {
	buf := make([]byte, 4096)
	for end := time.Now().Add(d); time.Now().Before(end); {
		sum := sha256.Sum256(buf)
		buf[0] = sum[0]
	}
}

//go:noinline
func sortLoop(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		xs := make([]int, 2048)
		for i := range xs {
			xs[i] = (i * 7919) % 2048
		}
		sort.Ints(xs)
		sink += uint64(xs[0])
	}
}

//go:noinline
func spin(d time.Duration) {
	var x uint64 = 1
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := 0; i < 10000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	sink += x
}

//go:noinline
func work() {
	hashLoop(400 * time.Millisecond)
	sortLoop(300 * time.Millisecond)
	spin(300 * time.Millisecond)
}

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: pprofgo <out.pprof>")
	}
	f, err := os.Create(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Fatal(err)
	}
	work()
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}
