package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ftpgate/ftpgate/cmd/ftpgate/trace"
)

const traceUsage = `usage:
  ftpgate trace [--ports 21,2121] [--json] FILE
  ftpgate trace --interface IF [--duration 1m] [--count N] [--write FILE] [--ports 21] [--json]

Explains, from a pcap or pcapng capture or a live capture, what happened to
every FTP data connection and why. Exit status: 0 when every data connection
succeeded, 1 when one failed, 2 on a bad file or bad usage.
`

// cmdTrace runs "ftpgate trace" and returns its exit status.
func cmdTrace(args []string, stdout, stderr io.Writer) int {
	opts, ok := parseTraceFlags(args, stderr)
	if !ok {
		return 2
	}
	var rep trace.Reporter = trace.NewTextReporter(stdout)
	if opts.json {
		rep = trace.NewJSONReporter(stdout)
	}
	a := trace.New(trace.Config{Ports: opts.ports}, rep)

	var (
		src    trace.Source
		source string
		live   *trace.Live
		ctx    = context.Background()
	)
	if opts.iface != "" {
		l, err := trace.OpenLive(opts.iface)
		if err != nil {
			fmt.Fprintf(stderr, "ftpgate trace: %v\n", err)
			return 2
		}
		defer l.Close()
		src, source, live = l, "interface "+opts.iface, l
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		if opts.duration > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, opts.duration)
			defer cancel()
		}
		fmt.Fprintf(stderr, "ftpgate trace: capturing on %s for %s (Ctrl-C to stop early)\n", opts.iface, durationText(opts.duration))
	} else {
		f, err := os.Open(opts.file)
		if err != nil {
			fmt.Fprintf(stderr, "ftpgate trace: %v\n", err)
			return 2
		}
		defer f.Close()
		if src, err = trace.OpenFile(f); err != nil {
			fmt.Fprintf(stderr, "ftpgate trace: %s: %v\n", opts.file, err)
			return 2
		}
		source = opts.file
	}

	run := trace.RunOptions{MaxPackets: opts.count}
	var wf *os.File
	var wb *bufio.Writer
	if opts.write != "" {
		var err error
		if wf, err = os.Create(opts.write); err != nil {
			fmt.Fprintf(stderr, "ftpgate trace: %v\n", err)
			return 2
		}
		wb = bufio.NewWriter(wf)
		run.Write = wb
	}
	runErr := trace.Run(ctx, src, a, run)
	if wb != nil {
		if err := errors.Join(wb.Flush(), wf.Close()); err != nil {
			runErr = errors.Join(runErr, fmt.Errorf("writing %s: %w", opts.write, err))
		}
	}
	if live != nil {
		if n := live.Dropped(); n > 0 {
			a.Warn(fmt.Sprintf("the kernel dropped %d packets that trace did not read in time: the report may miss some", n))
		}
	}
	sum, err := a.Finish(source)
	if err != nil {
		fmt.Fprintf(stderr, "ftpgate trace: %v\n", err)
		return 2
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "ftpgate trace: %s: %v\n", source, runErr)
		return 2
	}
	if !sum.OK() {
		return 1
	}
	return 0
}

// traceOptions are the flags of "ftpgate trace".
type traceOptions struct {
	file, iface, write string
	duration           time.Duration
	count              uint64
	ports              []uint16
	json               bool
}

// parseTraceFlags parses the flags, which may come before or after FILE.
func parseTraceFlags(args []string, stderr io.Writer) (traceOptions, bool) {
	var o traceOptions
	fs := flag.NewFlagSet("ftpgate trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, traceUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.iface, "interface", "", "capture live on interface `IF` instead of reading a file")
	fs.DurationVar(&o.duration, "duration", time.Minute, "live capture: stop after `D` (0: until interrupted)")
	fs.Uint64Var(&o.count, "count", 0, "stop after `N` packets (0: no limit)")
	fs.StringVar(&o.write, "write", "", "live capture: also save the packets to `FILE` (pcap)")
	ports := fs.String("ports", "21", "control-channel `ports`, comma-separated")
	fs.BoolVar(&o.json, "json", false, "write the report as JSON")
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return o, false
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	var err error
	if o.ports, err = parsePorts(*ports); err != nil {
		fmt.Fprintf(stderr, "ftpgate trace: --ports: %v\n", err)
		return o, false
	}
	switch {
	case len(files) > 1:
		fmt.Fprintf(stderr, "ftpgate trace: one capture file at a time, got %d\n", len(files))
		return o, false
	case len(files) == 1 && o.iface != "":
		fmt.Fprintln(stderr, "ftpgate trace: give either a capture file or --interface, not both")
		return o, false
	case len(files) == 0 && o.iface == "":
		fmt.Fprint(stderr, "ftpgate trace: give a capture file or --interface\n"+traceUsage)
		return o, false
	case o.write != "" && o.iface == "":
		fmt.Fprintln(stderr, "ftpgate trace: --write goes with --interface")
		return o, false
	case o.duration < 0:
		fmt.Fprintln(stderr, "ftpgate trace: --duration must not be negative")
		return o, false
	}
	if len(files) == 1 {
		o.file = files[0]
	}
	return o, true
}

// parsePorts parses "21,2121".
func parsePorts(s string) ([]uint16, error) {
	var ports []uint16
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		p, err := strconv.ParseUint(f, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("%q is not a port (1-65535)", f)
		}
		ports = append(ports, uint16(p))
	}
	return ports, nil
}

func durationText(d time.Duration) string {
	if d == 0 {
		return "as long as it runs"
	}
	return d.String()
}
