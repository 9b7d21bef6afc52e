package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// decode decodes data over cfg. It reads the YAML twice: once into a node
// tree, to catch syntax errors and extra documents and to learn which key
// sits on which line, and once into cfg with KnownFields. yaml.v3's messages
// name Go types ("field foo not found in type config.Data"); decode rewrites
// them in the file's terms ("listeners[0] (public): data: unknown key
// \"foo\""), keeping the line numbers.
func decode(data []byte, cfg *Config) error {
	nodes := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := nodes.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file, or only comments
		}
		return syntaxError(err)
	}
	var next yaml.Node
	switch err := nodes.Decode(&next); {
	case err == nil:
		return fmt.Errorf("line %d: a second YAML document starts here; the config file must hold exactly one", next.Line)
	case !errors.Is(err, io.EOF):
		return syntaxError(err)
	}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(cfg)
	var te *yaml.TypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		idx := newIndex(&doc)
		errs := make([]error, 0, len(te.Errors))
		for _, msg := range te.Errors {
			errs = append(errs, errors.New(idx.translate(msg)))
		}
		return errors.Join(errs...)
	default:
		return syntaxError(err)
	}
}

var syntaxLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError rewords a yaml.v3 parse error: "yaml: line 3: did not find
// expected key" becomes "line 3: invalid YAML: did not find expected key".
func syntaxError(err error) error {
	msg := err.Error()
	if m := syntaxLine.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("line %s: invalid YAML: %s", m[1], m[2])
	}
	return fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

// keyAt identifies a mapping key by its line and text.
type keyAt struct {
	line int
	key  string
}

// valueAt is a value node and the path of the key it belongs to.
type valueAt struct {
	node *yaml.Node
	path string
}

// index maps the positions yaml.v3 reports to paths in the file, in the form
// Validate uses: "limits.idle_timeout", "listeners[1] (ftp2): data.path".
type index struct {
	parents map[keyAt]string  // key → path of the mapping holding it
	values  map[int][]valueAt // line → values starting on that line
}

func newIndex(doc *yaml.Node) *index {
	idx := &index{parents: map[keyAt]string{}, values: map[int][]valueAt{}}
	for _, n := range doc.Content {
		idx.walk(n, "")
	}
	return idx
}

func (idx *index) walk(n *yaml.Node, path string) {
	idx.values[n.Line] = append(idx.values[n.Line], valueAt{n, path})
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ka := keyAt{k.Line, k.Value}
			if _, dup := idx.parents[ka]; !dup {
				idx.parents[ka] = path
			}
			idx.walk(v, joinPath(path, k.Value))
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if path == "listeners" {
				p = listenerPath(i, scalarField(item, "name"))
			}
			idx.walk(item, p)
		}
	}
	// Aliases are not followed: they may form cycles, and yaml.v3 reports
	// problems inside them at the anchor's line, which is indexed already.
}

// scalarField returns the value of key in mapping n, if it is a scalar.
func scalarField(n *yaml.Node, key string) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// joinPath appends key to path: "limits" + "max_sessions" is
// "limits.max_sessions", and a listener's fields follow ": " as in
// Validate's messages.
func joinPath(path, key string) string {
	switch {
	case path == "":
		return key
	case strings.HasSuffix(path, "]") || strings.HasSuffix(path, ")"):
		return path + ": " + key
	default:
		return path + "." + key
	}
}

// prefix returns "path: ", or "" for the top level.
func prefix(path string) string {
	if path == "" {
		return ""
	}
	return path + ": "
}

var (
	unknownField = regexp.MustCompile(`^line (\d+): field (.*) not found in type \S+$`)
	duplicateKey = regexp.MustCompile(`^line (\d+): mapping key (".*") already defined at line (\d+)$`)
	alreadySet   = regexp.MustCompile(`^line (\d+): field (.*) already set in type \S+$`)
	cannotDecode = regexp.MustCompile("^line (\\d+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
)

// translate rewords one of yaml.TypeError's messages. A message it does not
// recognise is returned unchanged.
func (idx *index) translate(msg string) string {
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return fmt.Sprintf("line %d: %sunknown key %q", line, prefix(idx.parents[keyAt{line, m[2]}]), m[2])
	}
	if m := duplicateKey.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		key, err := strconv.Unquote(m[2])
		if err != nil {
			return msg
		}
		return fmt.Sprintf("line %d: %sduplicate key %q (first at line %s)", line, prefix(idx.parents[keyAt{line, key}]), key, m[3])
	}
	if m := alreadySet.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return fmt.Sprintf("line %d: %sduplicate key %q", line, prefix(idx.parents[keyAt{line, m[2]}]), m[2])
	}
	if m := cannotDecode.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		v, ok := idx.value(line, m[2], m[3])
		if !ok {
			return msg
		}
		if m[4] == "time.Duration" {
			if v.node.Kind == yaml.ScalarNode {
				return fmt.Sprintf("line %d: %sinvalid duration %s: write a number with a unit, such as \"30s\" or \"15m\"", line, prefix(v.path), describe(v.node))
			}
			return fmt.Sprintf("line %d: %swant a duration such as \"30s\", got %s", line, prefix(v.path), describe(v.node))
		}
		return fmt.Sprintf("line %d: %swant %s, got %s", line, prefix(v.path), goType(m[4]), describe(v.node))
	}
	return msg
}

// value finds the node yaml.v3 could not decode: the one on line with the
// given tag, whose text starts as yaml.v3 shows it (shortened to 7
// characters and "..." when longer than 10).
func (idx *index) value(line int, tag, shown string) (valueAt, bool) {
	shown = strings.TrimSuffix(shown, "...")
	for _, v := range idx.values[line] {
		n := v.node
		if n.ShortTag() != tag {
			continue
		}
		if n.Kind == yaml.ScalarNode && !strings.HasPrefix(n.Value, shown) {
			continue
		}
		return v, true
	}
	return valueAt{}, false
}

// describe shows a node in an error message: a list, a mapping, a quoted
// string, or a number, boolean or null as written.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	s := n.Value
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	if n.ShortTag() == "!!str" {
		return strconv.Quote(s)
	}
	return s
}

// goType names, in the file's terms, the Go type yaml.v3 decoded into.
func goType(t string) string {
	switch {
	case t == "string":
		return "a string"
	case t == "int":
		return "an integer"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "config."):
		return "a mapping"
	default:
		return t
	}
}
