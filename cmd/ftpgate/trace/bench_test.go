package trace

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"
)

// bigCapture is the shape of the benchmark's capture.
const (
	benchWaves       = 400 // rounds of concurrent sessions
	benchPerWave     = 50  // sessions at once
	benchSegments    = 45  // data segments per transfer
	benchSegmentSize = 1448
	benchSnap        = 128 // bytes kept per packet, as "tcpdump -s 128"
)

// writeBigCapture writes a capture of benchWaves*benchPerWave FTP sessions
// to path: in each wave, benchPerWave sessions log in and negotiate
// (PASV, EPSV or PORT), their transfers run interleaved segment by segment,
// and they quit; one session in ten gets no answer to its data SYNs. It
// returns the number of packets written.
func writeBigCapture(tb testing.TB, path string) int {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	c := newCapture(tb, w, false)
	c.snap = benchSnap
	chunk := strings.Repeat("z", benchSegmentSize)
	type sess struct {
		ctl  ftpConn
		data *conn
		fail bool
	}
	for wave := range benchWaves {
		ss := make([]sess, benchPerWave)
		for i := range ss {
			n := wave*benchPerWave + i
			cli := ap(fmt.Sprintf("198.19.%d.%d:%d", 10+n%200, 1+n%250, 20000+n%40000))
			srv := ap(fmt.Sprintf("198.18.%d.%d:21", n%4, 1+n%7))
			s := &ss[i]
			s.ctl = c.ftp(cli, srv)
			s.ctl.login()
			s.fail = n%10 == 9
			dport := 30000 + n%20000
			dcli := ap(fmt.Sprintf("%s:%d", cli.Addr(), 40000+n%20000))
			dsrv := ap(fmt.Sprintf("%s:%d", srv.Addr(), dport))
			switch n % 3 {
			case 0:
				a := srv.Addr().As4()
				s.ctl.cmd("PASV", fmt.Sprintf("227 Entering Passive Mode (%d,%d,%d,%d,%d,%d).", a[0], a[1], a[2], a[3], dport>>8, dport&0xff))
			case 1:
				s.ctl.cmd("EPSV", fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)", dport))
			default:
				s.ctl.cmd("EPRT |1|"+dcli.Addr().String()+fmt.Sprintf("|%d|", dcli.Port()), "200 EPRT command successful.")
				dcli, dsrv = ap(fmt.Sprintf("%s:20", srv.Addr())), dcli
			}
			s.ctl.cmd("RETR pub/file.bin", "150 Opening BINARY mode data connection.")
			if s.fail {
				for range 3 {
					c.syn(dcli, dsrv, 1)
					c.tick(time.Millisecond)
				}
				continue
			}
			s.data = c.dial(dcli, dsrv)
		}
		for range benchSegments {
			for _, s := range ss {
				if s.data != nil {
					s.data.send(false, chunk)
				}
			}
		}
		for _, s := range ss {
			if s.data != nil {
				s.data.close()
				s.ctl.send(false, "226 Transfer complete.\r\n")
			} else {
				s.ctl.send(false, "425 Failed to establish connection.\r\n")
			}
			s.ctl.quit()
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return c.n
}

// peakHeap samples the bytes of live heap objects every few milliseconds
// until stop is closed, and returns the largest sample.
func peakHeap(stop <-chan struct{}) uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		metrics.Read(sample)
		peak = max(peak, sample[0].Value.Uint64())
		select {
		case <-stop:
			return peak
		case <-tick.C:
		}
	}
}

// BenchmarkAnalyze analyses a generated capture of more than a million
// packets (20,000 FTP sessions, 50 at a time, each with a 65 KB transfer
// or a failed data connection) from a file, and reports packets per second
// and the peak heap.
//
// With FTPGATE_TRACE_BENCH_FILE=PATH the capture is written there and kept,
// e.g. to time "ftpgate trace PATH" itself.
func BenchmarkAnalyze(b *testing.B) {
	path := os.Getenv("FTPGATE_TRACE_BENCH_FILE")
	if path == "" {
		path = filepath.Join(b.TempDir(), "big.pcap")
	}
	packets := writeBigCapture(b, path)
	if packets < 1_000_000 {
		b.Fatalf("the capture has %d packets, want at least a million", packets)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("capture: %d packets, %d MiB", packets, st.Size()>>20)
	runtime.GC()

	var peak uint64
	var elapsed time.Duration
	runs := 0
	for b.Loop() {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var p uint64
		wg.Go(func() { p = peakHeap(stop) })
		start := time.Now()
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		src, err := OpenFile(f)
		if err != nil {
			b.Fatal(err)
		}
		col := &countReporter{}
		a := New(Config{}, col)
		if err := Run(b.Context(), src, a, RunOptions{}); err != nil {
			b.Fatal(err)
		}
		held := len(a.sessions)
		sum, err := a.Finish(path)
		if err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		runs++
		f.Close()
		close(stop)
		wg.Wait()
		peak = max(peak, p)

		want := benchWaves * benchPerWave
		if sum.Sessions != want || sum.Verdicts[Transferred] != want*9/10 || sum.Verdicts[SYNUnanswered] != want/10 {
			b.Fatalf("summary %+v", sum)
		}
		if held > 2*benchPerWave {
			b.Fatalf("%d sessions held at the end of the capture: memory is not bounded", held)
		}
	}
	b.ReportMetric(float64(packets)*float64(runs)/elapsed.Seconds(), "packets/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// countReporter counts sessions and keeps nothing.
type countReporter struct{ n int }

func (c *countReporter) Session(*Session) error { c.n++; return nil }
func (c *countReporter) Finish(*Summary) error  { return nil }
