package netlab

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Element is one element of a kernel set or map in the gateway: a member
// of an ipset, or an element of an nftables map.
type Element struct {
	// Set is where it is: the ipset's name ("FTPGATE-in4"), or the map as
	// "FAMILY TABLE MAP" ("ip FTPGATE dnat_to").
	Set string
	// Member is the element as ipset or nft prints it, without its
	// timeout: "198.19.0.2,tcp:40001,198.19.0.1", or for a map
	// "198.19.0.2 . 198.19.0.1 . 40401 : 198.18.1.2 . 30001".
	Member string
	// Comment is an ipset member's comment; nft elements have none here.
	Comment string
	// Expires is how long until the kernel removes the element (whole
	// seconds as the tools print them); zero if it has no timeout.
	Expires time.Duration
}

// String is the element as the tests print and compare it: set, member
// and comment, without the timeout, e.g.
// `FTPGATE-in4 198.19.0.2,tcp:40001,198.19.0.1 comment "ftpgate s=1 p=1"`.
func (e Element) String() string {
	s := e.Set + " " + e.Member
	if e.Comment != "" {
		s += fmt.Sprintf(" comment %q", e.Comment)
	}
	return s
}

// GatewayRules6 returns the gateway's IPv6 rules as ip6tables-save prints
// them (all tables), in the variant the network was built with.
func (h *Network) GatewayRules6() (string, error) {
	return h.Gateway.Run(ip6tables(h.IPTables) + "-save")
}

// IPSet is an ipset in the gateway, as `ipset save` creates it.
type IPSet struct {
	Name string
	Type string // e.g. "hash:ip,port,ip"
	// Options are the rest of the create line, e.g. "family inet hashsize
	// 1024 maxelem 1048576 timeout 10 comment bucketsize 12 initval 0x...".
	Options string
}

// GatewaySets returns the gateway's ipsets whose names start with prefix,
// in the order ipset lists them, and their members (ipset save, run in the
// gateway namespace).
func (h *Network) GatewaySets(prefix string) (sets []IPSet, members []Element, err error) {
	out, err := h.Gateway.Run("ipset", "save")
	if err != nil {
		return nil, nil, err
	}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.HasPrefix(f[1], prefix) {
			continue
		}
		switch f[0] {
		case "create":
			sets = append(sets, IPSet{Name: f[1], Type: f[2], Options: afterFields(line, 3)})
		case "add":
			e := Element{Set: f[1], Member: f[2]}
			var rest string
			if e.Comment, rest, err = ipsetOptions(afterFields(line, 3), &e); err != nil {
				return nil, nil, fmt.Errorf("ipset save: %q: %w", line, err)
			}
			if rest != "" {
				return nil, nil, fmt.Errorf("ipset save: %q: unknown options %q", line, rest)
			}
			members = append(members, e)
		}
	}
	return sets, members, nil
}

// afterFields is what follows the first n fields of a line that ipset
// wrote (fields separated by single spaces; a comment may hold more).
func afterFields(line string, n int) string {
	parts := strings.SplitN(strings.TrimSpace(line), " ", n+1)
	if len(parts) <= n {
		return ""
	}
	return parts[n]
}

// ipsetOptions parses what follows a member in `ipset save`: "timeout N"
// and `comment "TEXT"`, in that order, each optional. It sets e.Expires and
// returns the comment and what it did not understand.
func ipsetOptions(s string, e *Element) (comment, rest string, err error) {
	if after, ok := strings.CutPrefix(s, "timeout "); ok {
		n, tail, _ := strings.Cut(after, " ")
		secs, err := strconv.Atoi(n)
		if err != nil {
			return "", s, fmt.Errorf("timeout %q: %w", n, err)
		}
		e.Expires = time.Duration(secs) * time.Second
		s = strings.TrimSpace(tail)
	}
	if after, ok := strings.CutPrefix(s, "comment "); ok {
		q, err := strconv.QuotedPrefix(after)
		if err != nil {
			return "", s, fmt.Errorf("comment %q: %w", after, err)
		}
		comment, _ = strconv.Unquote(q)
		s = strings.TrimSpace(after[len(q):])
	}
	return comment, s, nil
}

// GatewayTables returns the gateway's nftables tables named name, as
// "FAMILY NAME" ("ip FTPGATE", "ip6 FTPGATE"), and the elements of their
// maps (nft, run in the gateway namespace).
func (h *Network) GatewayTables(name string) (tables []string, elements []Element, err error) {
	out, err := h.Gateway.Run("nft", "list", "tables")
	if err != nil {
		return nil, nil, err
	}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "table" || f[2] != name {
			continue
		}
		tables = append(tables, f[1]+" "+f[2])
		els, err := h.tableElements(f[1], f[2])
		if err != nil {
			return nil, nil, err
		}
		elements = append(elements, els...)
	}
	return tables, elements, nil
}

// tableElements returns the elements of the maps of one nftables table,
// from nft's JSON output.
func (h *Network) tableElements(family, table string) ([]Element, error) {
	out, err := h.Gateway.Run("nft", "--json", "list", "table", family, table)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Nftables []struct {
			Map *struct {
				Name string  `json:"name"`
				Elem [][]any `json:"elem"`
			} `json:"map"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("nft --json list table %s %s: %w", family, table, err)
	}
	var els []Element
	for _, obj := range doc.Nftables {
		if obj.Map == nil {
			continue
		}
		for _, kv := range obj.Map.Elem {
			if len(kv) != 2 {
				return nil, fmt.Errorf("nft --json list table %s %s: map %s: element %v is no key and value", family, table, obj.Map.Name, kv)
			}
			e := Element{Set: family + " " + table + " " + obj.Map.Name,
				Member: nftValue(kv[0]) + " : " + nftValue(kv[1])}
			if m, ok := kv[0].(map[string]any); ok {
				if inner, ok := m["elem"].(map[string]any); ok {
					if secs, ok := inner["expires"].(float64); ok {
						e.Expires = time.Duration(secs * float64(time.Second))
					}
				}
			}
			els = append(els, e)
		}
	}
	return els, nil
}

// nftValue renders a key or value of nft's JSON as nft's text does:
// concatenations joined by " . ", an element with a timeout by its value.
func nftValue(v any) string {
	switch v := v.(type) {
	case map[string]any:
		if parts, ok := v["concat"].([]any); ok {
			s := make([]string, len(parts))
			for i, p := range parts {
				s[i] = nftValue(p)
			}
			return strings.Join(s, " . ")
		}
		if inner, ok := v["elem"].(map[string]any); ok {
			return nftValue(inner["val"])
		}
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case string:
		return v
	}
	return fmt.Sprint(v)
}
