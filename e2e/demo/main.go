// Command demo is ftpgate's main job on its built-in network (sudo make
// demo): it builds the home-router network of the end-to-end tests (a client
// on the Internet side, a Linux router with a stateful firewall and NAT,
// vsftpd behind it), tries every client and operation through a plain port
// forward of port 21 (they fail: the 227 reply carries the server's private
// address and the firewall drops the data connections), then through
// ftpgate in each server_mode (they pass, each file's SHA-256 checked), and
// prints the table. Everything it creates is removed when it ends.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

const config = `
listeners:` + netlab.HomeRouterListeners + `limits: {idle_timeout: 2m, data_timeout: 10s}
log: {level: info, format: text}
firewall: {pinhole_ttl: 10s} # backend auto: netlink where the kernel has it
`

func main() {
	bin := flag.String("ftpgate", "bin/ftpgate", "the ftpgate `binary` to run in the gateway")
	flag.Parse()
	os.Exit(demo(*bin))
}

func demo(bin string) int {
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	fmt.Println("Building the network: client 198.19.0.2 -- [198.19.0.1 gateway 198.18.1.1] -- 198.18.1.2 vsftpd")
	fmt.Println("The gateway's firewall: INPUT and FORWARD policy DROP, ESTABLISHED accepted, port 21 accepted, nothing else:")
	fmt.Println("ftpgate opens an exact, short-lived pinhole for each data connection (firewall.backend auto);")
	fmt.Println("198.19.0.10:21 is a plain DNAT to the server (no ALG); ftpgate listens on 198.19.0.1:21 (server_mode same),")
	fmt.Println(":2121 (server_mode passive), :2122 (server_mode active) and :2124 (the kernel data path).")
	h, err := netlab.NewHomeRouter("iptables", 21, 2121, 2122, 2124)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: building the network:", err)
		return 1
	}
	var once sync.Once
	cleanup := func() {
		once.Do(func() {
			if err := h.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "demo: cleanup:", err)
			}
		})
	}
	defer cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		cleanup()
		os.Exit(1)
	}()

	type row struct {
		c     netlab.Client
		op    netlab.Op
		cells [5]netlab.Cell
	}
	var rows []*row
	for _, c := range netlab.Clients {
		for _, op := range netlab.Ops {
			rows = append(rows, &row{c: c, op: op})
		}
	}

	fmt.Printf("\n1/2 Without ftpgate: %d transfers through the plain DNAT, in parallel (each fails on a timeout, up to a minute)...\n", len(rows))
	var wg sync.WaitGroup
	for _, r := range rows {
		wg.Go(func() { r.cells[0] = h.Do(r.c, netlab.GatewayDNAT, 21, r.op) })
	}
	wg.Wait()

	fmt.Println("2/2 Through ftpgate...")
	gw, err := h.StartFtpgate(bin, config, 21, 2121, 2122, 2124)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	fmt.Println(backendUsed(gw.Stderr.String()))
	for i, port := range []int{21, 2121, 2122, 2124} {
		for _, r := range rows {
			r.cells[i+1] = h.Do(r.c, netlab.GatewayOut, port, r.op)
		}
	}
	gw.Signal(syscall.SIGTERM, 10*time.Second)

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "client\toperation\tplain DNAT, no ALG\tftpgate relay, same\tftpgate relay, passive\tftpgate relay, active\tftpgate kernel path")
	fmt.Fprintln(tw, "------\t---------\t------------------\t-------------------\t----------------------\t---------------------\t-------------------")
	good := true
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s", r.c.Name, r.op)
		for i, cell := range r.cells {
			status := "pass"
			if cell.Err != nil {
				status = "FAIL"
			}
			if (i == 0) == (cell.Err == nil) {
				good = false // plain DNAT must fail, ftpgate must pass
			}
			fmt.Fprintf(tw, "\t%s (%.1fs)", status, cell.Elapsed.Seconds())
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	stray, err := h.StrayPackets()
	if err != nil || stray > 0 {
		fmt.Printf("\n%d packets were sent to addresses outside the test space (err %v)\n", stray, err)
		good = false
	}
	fmt.Println()
	if !good {
		fmt.Println("UNEXPECTED: a plain-DNAT transfer passed or an ftpgate transfer failed. Failures through ftpgate:")
		for _, r := range rows {
			for i, cell := range r.cells[1:] {
				if cell.Err != nil {
					fmt.Printf("  %s %s (column %d): %v\n", r.c.Name, r.op, i+1, cell.Err)
				}
			}
		}
		return 1
	}
	fmt.Println("Every transfer failed through the plain DNAT and passed through ftpgate (files checked by SHA-256).")
	return 0
}

// backendUsed says which pinhole backend ftpgate chose, from its log.
func backendUsed(log string) string {
	switch {
	case strings.Contains(log, "firewall backend netlink"):
		return "ftpgate's pinholes: ipset and nftables map elements with kernel timeouts (the netlink backend)."
	case strings.Contains(log, "firewall backend iptables"), strings.Contains(log, "using iptables"):
		return "ftpgate's pinholes: exact iptables rules in its own chains (the iptables backend; its log says why not netlink)."
	}
	return "ftpgate's pinhole backend: see its log."
}
