package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// listener is a valid listener, to build files from.
const listener = "listeners:\n  - name: a\n    listen: 198.19.0.1:21\n    upstream: 198.18.1.2:21\n"

// TestErrorLines checks the line each kind of problem names, and which
// problems Parse leaves out beside a decoding problem.
func TestErrorLines(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"key present", listener + "    data:\n      client_ports: 80-90\n",
			`line 6: listeners[0] (a): data.client_ports: 80-90 starts below port 1024`},
		{"key absent: the listener", "listeners:\n  - name: a\n    listen: 198.19.0.1:21\n",
			`line 2: listeners[0] (a): upstream: required in reverse mode (or upstreams, a list)`},
		{"key absent: its section", listener + "  - name: b\n    listen: 198.19.0.1:2121\n    upstream: 198.18.1.3:21\n    data:\n      server_ports: 51000-51999\n",
			`line 8: listeners[1] (b): data.client_ports: 40000-40999 on 198.19.0.1 overlaps data.client_ports 40000-40999 on 198.19.0.1 of listeners[0] (a)`},
		{"key absent: the key it depends on", listener + "limits:\n  idle_timeout: 1h\n  max_sessions: 10\n",
			`line 7: limits.max_sessions_per_client: must be at most limits.max_sessions (10), got 64`},
		{"flow style", "listeners: [{name: a, listen: 198.19.0.1:21, upstream: 198.18.1.2:21,\n  data: {path: kernel, server_mode: passive}}]\n",
			`line 2: listeners[0] (a): data.server_mode: "passive" needs path "relay": the kernel path cannot convert modes; use "same"`},
		{"list item", listener + "    allow_clients:\n      - 10.0.0.0/8\n      - 10.0.0.300/8\n",
			`line 7: listeners[0] (a): allow_clients[1]: invalid CIDR "10.0.0.300/8"`},
		{"alias: the line that uses it", "listeners:\n  - &a\n    name: a\n    listen: 198.19.0.1:21\n    upstream: 198.18.1.2:21\n  - *a\n",
			"4 problems:\n" +
				`line 6: listeners[1] (a): name: "a" is already used by listeners[0]` + "\n" +
				`line 6: listeners[1] (a): listen: 198.19.0.1:21 is already used by listeners[0] (a)` + "\n" +
				`line 6: listeners[1] (a): data.client_ports: 40000-40999 on 198.19.0.1 overlaps data.client_ports 40000-40999 on 198.19.0.1 of listeners[0] (a)` + "\n" +
				`line 6: listeners[1] (a): data.server_ports: 50000-50999 on any local address (no server_address) overlaps data.server_ports 50000-50999 on any local address (no server_address) of listeners[0] (a)`},
		{"sorted by line, decoding and checks together", "limits:\n  max_sessions: 0\n" + listener + "    mode: revers\n    colour: blue\n",
			"3 problems:\n" +
				`line 2: limits.max_sessions: must be at least 1, got 0` + "\n" +
				`line 7: listeners[0] (a): mode: unknown value "revers"; use "reverse", "transparent" or "forward"` + "\n" +
				`line 8: listeners[0] (a): unknown key "colour"`},
		{"whole-file problems first", "limits:\n  max_sessions: 0\n",
			"2 problems:\nat least one listener is required\n" + `line 2: limits.max_sessions: must be at least 1, got 0`},

		// Left out: the consequences of a decoding problem.
		{"value not decoded", listener + "limits:\n  max_sessions: [1]\n  max_sessions_per_client: 1000000\n",
			`line 6: limits.max_sessions: want an integer, got a list`},
		{"list not decoded", "listeners: {name: a}\n",
			`line 1: listeners: want a list, got a mapping`},
		{"list item not decoded: the list is not checked", listener + "    allow_clients: [10.0.0.0/8, {a: b}, 10.0.0.300/8]\n",
			`line 5: listeners[0] (a): allow_clients[1]: want a string, got a mapping`},
		{"duplicate key: the listener is not decoded", listener + "    upstream: 198.18.1.3:21\n",
			`line 5: listeners[0] (a): duplicate key "upstream" (first at line 4)`},
		{"misspelt key: no required error", "listeners:\n  - name: a\n    listen: 198.19.0.1:21\n    upstrem: 198.18.1.2:21\n",
			`line 4: listeners[0] (a): unknown key "upstrem"`},
		{"misspelt section: no required error", "listener:\n  - name: a\n",
			`line 1: unknown key "listener"`},
		{"misspelt key: the other problems stay", "listeners:\n  - name: a\n    listen: 198.19.0.1\n    upstrem: 198.18.1.2:21\n",
			"2 problems:\n" + `line 3: listeners[0] (a): listen: invalid address "198.19.0.1": missing port` + "\n" +
				`line 4: listeners[0] (a): unknown key "upstrem"`},
		{"misspelt key elsewhere: the required error stays", "listeners:\n  - name: a\n    listen: 198.19.0.1:21\n    data: {sever_mode: active}\n",
			"2 problems:\n" + `line 2: listeners[0] (a): upstream: required in reverse mode (or upstreams, a list)` + "\n" +
				`line 4: listeners[0] (a): data: unknown key "sever_mode"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ftpgate.yaml")
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if got, want := errString(err), path+": "+tt.want; got != want {
				t.Errorf("Load error:\n got %s\nwant %s", got, want)
			}
		})
	}
}

// TestErrorValues checks that each problem is an *Error with its line and
// path, as errors.As finds it.
func TestErrorValues(t *testing.T) {
	_, err := Parse([]byte(listener + "    data:\n      client_ports: 80-90\nlimits:\n  max_sessions: 0\n"))
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Parse error %T is not joined: %v", err, err)
	}
	var got []string
	for _, e := range joined.Unwrap() {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Fatalf("problem %T is not an *Error: %v", e, e)
		}
		got = append(got, fmt.Sprintf("%d|%s|%s", ce.Line, ce.Path, ce.Err))
	}
	want := "6|listeners[0] (a): data.client_ports|80-90 starts below port 1024\n" +
		"8|limits.max_sessions|must be at least 1, got 0"
	if strings.Join(got, "\n") != want {
		t.Errorf("problems:\n got %s\nwant %s", strings.Join(got, "\n"), want)
	}
}

// TestValidateWithoutFile checks Validate on a Config built in Go: the same
// problems, without lines, in the order of the checks.
func TestValidateWithoutFile(t *testing.T) {
	c := Default()
	c.Limits.MaxSessions = 0
	c.Listeners = []Listener{{Name: "a", Listen: "198.19.0.1:21", Upstream: "198.18.1.2:21"}}
	c.Listeners[0].applyDefaults()
	c.Listeners[0].Data.ClientPorts = "80-90"
	err := c.Validate()
	want := "listeners[0] (a): data.client_ports: 80-90 starts below port 1024\n" +
		"limits.max_sessions: must be at least 1, got 0"
	if got := errString(err); got != want {
		t.Errorf("Validate:\n got %s\nwant %s", got, want)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 0 || ce.Path != "listeners[0] (a): data.client_ports" {
		t.Errorf("errors.As(Validate error) = %+v, want an *Error without line", ce)
	}
}

// TestFloatForInteger: yaml.v3 decodes 8.5 into an int as 8, silently
// (before this check, max_sessions: 8.5 was taken as 8). Such a value, and
// any float, is an error; durations and ports refuse them too.
func TestFloatForInteger(t *testing.T) {
	tests := []struct {
		text, want string
	}{
		{"limits:\n  max_sessions: 8.5\n", `line 6: limits.max_sessions: 8.5 is not an integer`},
		{"limits:\n  max_line_bytes: 4096.0\n", `line 6: limits.max_line_bytes: 4096.0 is not an integer: write 4096`},
		{"limits:\n  max_sessions: 1e4\n", `line 6: limits.max_sessions: 1e4 is not an integer: write 10000`},
		{"limits:\n  client_ipv6_prefix: -.inf\n", `line 6: limits.client_ipv6_prefix: -.inf is not an integer`},
		// Out of range: yaml.v3 refuses it; reported once.
		{"limits:\n  max_sessions: 1e100\n", `line 6: limits.max_sessions: want an integer, got 1e100`},
		// Through an alias: at the line that uses it too.
		{"limits:\n  max_sessions: &n 8.5\n  max_sessions_per_client: *n\n",
			"line 6: limits.max_sessions: 8.5 is not an integer\n" +
				"line 7: limits.max_sessions_per_client: 8.5 is not an integer"},
		// A truncated value is not checked further (0.5 would be 0).
		{"limits:\n  max_sessions: 0.5\n", `line 6: limits.max_sessions: 0.5 is not an integer`},
		{"limits:\n  idle_timeout: 1.5\n", `line 6: limits.idle_timeout: invalid duration 1.5: write a number with a unit, such as "30s" or "15m"`},
		{"    data: {client_ports: 40000.5}\n", `line 5: listeners[0] (a): data.client_ports: parsing port range "40000.5": first port is not a decimal number: syntax error`},
		{"    data: {server_ports: 5e4}\n", `line 5: listeners[0] (a): data.server_ports: parsing port range "5e4": first port is not a decimal number: syntax error`},
		{"    allow_ports: [21.0]\n",
			`line 5: listeners[0] (a): allow_ports: only for transparent and forward modes; a reverse listener connects to its upstream` + "\n" +
				`line 5: listeners[0] (a): allow_ports[0]: parsing port range "21.0": first port is not a decimal number: syntax error`},
	}
	for _, tt := range tests {
		text := listener + tt.text
		cfg, err := Parse([]byte(text))
		if err == nil {
			t.Errorf("Parse(%q) succeeded: max_sessions %d", tt.text, cfg.Limits.MaxSessions)
			continue
		}
		if got := err.Error(); got != tt.want {
			t.Errorf("Parse(%q):\n got %s\nwant %s", tt.text, got, tt.want)
		}
	}
	// The listen port is text: a float there is no port.
	_, err := Parse([]byte("listeners:\n  - name: a\n    listen: 198.19.0.1:21.5\n    upstream: 198.18.1.2:21\n"))
	if want := `line 3: listeners[0] (a): listen: invalid address "198.19.0.1:21.5": port must be a number from 1 to 65535`; errString(err) != want {
		t.Errorf("listen with a float port:\n got %v\nwant %s", err, want)
	}
}

// TestTooLarge checks that a file over MaxFileSize is refused before it is
// decoded, and one of MaxFileSize is not.
func TestTooLarge(t *testing.T) {
	dir := t.TempDir()
	fill := func(name string, size int) string {
		// Valid YAML: a listener, then comment lines up to size.
		b := []byte(listener)
		line := "# " + strings.Repeat("x", 77) + "\n"
		for len(b)+len(line) <= size {
			b = append(b, line...)
		}
		b = append(b, strings.Repeat("#", size-len(b))...)
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	big := fill("big.yaml", MaxFileSize+1)
	_, err := Load(big)
	if want := big + ": larger than 4 MiB: not a configuration file"; errString(err) != want {
		t.Errorf("Load(%d bytes) = %v, want %s", MaxFileSize+1, err, want)
	}
	data, err := os.ReadFile(big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data); errString(err) != "4194305 bytes, larger than 4 MiB: not a configuration file" {
		t.Errorf("Parse(%d bytes) = %v", len(data), err)
	}
	if _, err := Load(fill("max.yaml", MaxFileSize)); err != nil {
		t.Errorf("Load(%d bytes) = %v, want no error", MaxFileSize, err)
	}
}

// TestAliasBomb checks that aliases expanding hugely ("billion laughs")
// are refused, and that those the types do not let expand are harmless.
func TestAliasBomb(t *testing.T) {
	// Each listener repeats the first, with its 1,000 deny_commands, 1,000
	// times: 1,000,000 values from 6 kB.
	var b strings.Builder
	b.WriteString("listeners:\n  - &l\n    name: a\n    listen: 198.19.0.1:21\n    upstream: 198.18.1.2:21\n    deny_commands: [")
	b.WriteString(strings.Repeat("site,", 999) + "site]\n")
	b.WriteString(strings.Repeat("  - *l\n", 1000))
	_, err := Parse([]byte(b.String()))
	want := "invalid YAML: document contains excessive aliasing: its aliases (*name) expand to far more than the file holds"
	if errString(err) != want {
		t.Errorf("Parse(1,000 aliases of 1,000 values):\n got %.300s\nwant %s", errString(err), want)
	}

	// The classic bomb, nested lists, 10^9 strings: decoded into a list
	// of strings, each alias is one wrong value, not expanded.
	b.Reset()
	b.WriteString("x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "x%d: &x%d [%s*x%d]\n", i, i, strings.Repeat(fmt.Sprintf("*x%d, ", i-1), 9), i-1)
	}
	b.WriteString(listener + "    allow_clients: *x9\n")
	_, err = Parse([]byte(b.String()))
	// The unknown keys, and the 10 lists in allow_clients, reported at
	// their anchor's line, once.
	want = ""
	for i := range 10 {
		want += fmt.Sprintf("line %d: unknown key \"x%d\"\n", i+1, i)
	}
	want = strings.Replace(want, "line 10:", "line 9: want a string, got a list\nline 10:", 1)
	if got := errString(err) + "\n"; got != want {
		t.Errorf("Parse(billion laughs):\n got %.1000s\nwant %s", got, want)
	}
}

// TestManyKeys checks that a mapping of more keys than any section has is
// refused before yaml.v3 compares all their pairs.
func TestManyKeys(t *testing.T) {
	var b strings.Builder
	b.WriteString(listener + "limits: {")
	for i := range 50_000 {
		fmt.Fprintf(&b, "k%d: 0, ", i)
	}
	b.WriteString("max_sessions: 1}\n")
	_, err := Parse([]byte(b.String()))
	if want := "line 5: limits: a mapping of 50001 keys, more than the 100 any section may have"; errString(err) != want {
		t.Errorf("Parse(50,001 keys):\n got %.300v\nwant %s", err, want)
	}
}
