package trace

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Snaplen is the longest packet trace keeps, live and in files it writes:
// tcpdump's default, and enough for the super-packets of segmentation
// offload that a capture on a Linux host sees.
const Snaplen = 262144

// ErrFormat means a file is not a pcap or pcapng capture, or its header is
// damaged.
var ErrFormat = errors.New("not a pcap or pcapng capture")

// errIdle is what a live source returns when no packet arrived in a while:
// Run checks for cancellation and asks again.
var errIdle = errors.New("trace: no packet yet")

// Source delivers packets in capture order.
type Source interface {
	// ReadPacket returns the next packet and its link type. data is valid
	// until the next call. At the end it returns io.EOF; a file that ends
	// in the middle of a packet returns io.ErrUnexpectedEOF.
	ReadPacket() (data []byte, ci gopacket.CaptureInfo, link layers.LinkType, err error)
}

// pcapngMagic is the block type of a pcapng section header.
const pcapngMagic = 0x0A0D0D0A

// OpenFile returns a Source reading a pcap (plain or gzipped) or pcapng
// capture from r. Errors in the file header wrap ErrFormat.
func OpenFile(r io.Reader) (Source, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("reading the file header: %w (%v)", ErrFormat, err)
	}
	if binary.LittleEndian.Uint32(magic) == pcapngMagic {
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true, SkipUnknownVersion: true})
		if err != nil {
			return nil, fmt.Errorf("reading the pcapng section header: %w (%v)", ErrFormat, err)
		}
		return ngSource{ng}, nil
	}
	pr, err := pcapgo.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("reading the pcap file header: %w (%v)", ErrFormat, err)
	}
	return pcapSource{pr}, nil
}

type pcapSource struct{ r *pcapgo.Reader }

func (s pcapSource) ReadPacket() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
	data, ci, err := s.r.ZeroCopyReadPacketData()
	return data, ci, s.r.LinkType(), err
}

type ngSource struct{ r *pcapgo.NgReader }

func (s ngSource) ReadPacket() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
	data, ci, err := s.r.ZeroCopyReadPacketData()
	link := s.r.LinkType()
	if len(ci.AncillaryData) > 0 {
		if lt, ok := ci.AncillaryData[0].(layers.LinkType); ok {
			link = lt
		}
	}
	return data, ci, link, err
}

// RunOptions controls Run.
type RunOptions struct {
	// MaxPackets stops the run after that many packets; 0 means no limit.
	MaxPackets uint64
	// Write, if set, receives every packet read as a pcap file
	// (nanosecond timestamps, the link type of the first packet; packets
	// of other link types are left out).
	Write io.Writer
}

// Run feeds the packets of src to a until the source ends, ctx is done or
// MaxPackets were read. A source that ends in the middle of a packet is a
// warning in the summary, not an error; other read errors are returned,
// wrapped, after the packets before them were analysed.
func Run(ctx context.Context, src Source, a *Analyzer, opt RunOptions) error {
	var (
		w        *pcapgo.Writer
		wlink    layers.LinkType
		n        uint64
		done     = ctx.Done()
		writeErr error
	)
	for opt.MaxPackets == 0 || n < opt.MaxPackets {
		if n%256 == 0 {
			select {
			case <-done:
				return nil
			default:
			}
		}
		data, ci, link, err := src.ReadPacket()
		switch {
		case errors.Is(err, errIdle):
			a.idle(time.Now())
			select {
			case <-done:
				return nil
			default:
			}
			continue
		case err == io.EOF:
			return writeErr
		case errors.Is(err, io.ErrUnexpectedEOF):
			a.warn("the capture is truncated: it ends in the middle of packet %d", n+1)
			return writeErr
		case err != nil:
			return errors.Join(fmt.Errorf("reading packet %d: %w", n+1, err), writeErr)
		}
		n++
		if opt.Write != nil && writeErr == nil {
			if w == nil {
				w, wlink = pcapgo.NewWriterNanos(opt.Write), link
				writeErr = w.WriteFileHeader(Snaplen, link)
			}
			if link == wlink && writeErr == nil {
				wci, wdata := ci, data[:min(len(data), Snaplen)]
				wci.CaptureLength, wci.Length = len(wdata), max(ci.Length, len(wdata))
				writeErr = w.WritePacket(wci, wdata)
			}
			if writeErr != nil {
				writeErr = fmt.Errorf("writing the capture: %w", writeErr)
			}
		}
		a.Packet(data, ci, link)
	}
	return writeErr
}
