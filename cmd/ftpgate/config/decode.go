package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decode decodes data over cfg. It reads the YAML twice: once into a node
// tree, to catch syntax errors and extra documents and to index which key
// sits on which line, and once into cfg with KnownFields. yaml.v3's messages
// name Go types ("field foo not found in type config.Data"); decode rewrites
// them in the file's terms ("listeners[0] (public): data: unknown key
// \"foo\""), keeping the line numbers.
//
// yaml.v3 truncates a float decoded into an integer field (8.5 becomes 8);
// decode reports such a value as not an integer instead, from the node
// tree's tags. Aliases are expanded by yaml.v3 alone, which fails on a
// document whose aliases expand far beyond its size ("billion laughs").
//
// A mapping of more than maxKeys keys is refused before the second
// reading: yaml.v3 would take a time growing with the square of their
// number to look for duplicates.
//
// decode returns the index of the node tree (nil for an empty file) and
// the problems found, each with its line, or, alone, a fatal error: a
// syntax error, a second document, a mapping of too many keys or excessive
// aliasing, after which nothing else is worth reporting.
func decode(data []byte, cfg *Config) (*index, []*Error, error) {
	nodes := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := nodes.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, nil // empty file, or only comments
		}
		return nil, nil, syntaxError(err)
	}
	var next yaml.Node
	switch err := nodes.Decode(&next); {
	case err == nil:
		return nil, nil, &Error{Line: next.Line, Err: errors.New("a second YAML document starts here; the config file must hold exactly one")}
	case !errors.Is(err, io.EOF):
		return nil, nil, syntaxError(err)
	}
	idx := newIndex(&doc)
	if big := idx.tooManyKeys; big != nil {
		return nil, nil, big
	}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(cfg)
	var errs []*Error
	var te *yaml.TypeError
	switch {
	case err == nil:
	case errors.As(err, &te):
		seen := make(map[string]bool, len(te.Errors))
		for _, msg := range te.Errors {
			e := idx.translate(msg)
			// yaml.v3 may report a value twice (through an alias, say).
			if s := e.Error(); !seen[s] {
				seen[s] = true
				errs = append(errs, e)
			}
		}
	default:
		return nil, nil, syntaxError(err)
	}
	for _, e := range idx.floats {
		if !idx.failed[e.key] { // else yaml.v3 refused it already (1e100)
			idx.fail(e.key)
			errs = append(errs, e)
		}
	}
	return idx, errs, nil
}

var syntaxLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError rewords a yaml.v3 parse error: "yaml: line 3: did not find
// expected key" becomes "line 3: invalid YAML: did not find expected key".
func syntaxError(err error) error {
	msg := err.Error()
	if m := syntaxLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Line: line, Err: fmt.Errorf("invalid YAML: %s", m[2])}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if msg == "document contains excessive aliasing" {
		msg += ": its aliases (*name) expand to far more than the file holds"
	}
	return &Error{Err: fmt.Errorf("invalid YAML: %s", msg)}
}

// keyAt identifies a mapping key by its line and text.
type keyAt struct {
	line int
	key  string
}

// place is where a value sits in the file: its path as errors show it
// ("listeners[1] (ftp2): data.path") and its index key
// ("listeners[1].data.path").
type place struct {
	path, key string
}

// valueAt is a value node, the place of the key it belongs to, and the
// type it decodes into (nil if none: under an unknown key).
type valueAt struct {
	node *yaml.Node
	place
	typ reflect.Type
}

// index maps the positions yaml.v3 reports to places in the file, and
// fields to the lines they are on.
type index struct {
	lines   map[string]int    // key → line of that mapping key or list item
	parents map[keyAt]place   // mapping key → the mapping holding it
	values  map[int][]valueAt // line → values starting on that line
	// unknown holds the keys of the mappings holding an unknown key;
	// failed those of the values that could not be decoded.
	unknown, failed map[string]bool
	// floats are the floats written where an integer is expected.
	floats []*Error
	// tooManyKeys is the first mapping with more than maxKeys keys.
	tooManyKeys *Error
	// fields caches, per struct type, its fields' types by YAML key.
	fields map[reflect.Type]map[string]reflect.Type
}

// maxKeys bounds the keys of one mapping: no section has more than a few
// dozen, and yaml.v3 compares every pair of a mapping's keys to find
// duplicates, a time that grows with the square of their number.
const maxKeys = 100

func newIndex(doc *yaml.Node) *index {
	idx := &index{
		lines:   map[string]int{},
		parents: map[keyAt]place{},
		values:  map[int][]valueAt{},
		unknown: map[string]bool{},
		failed:  map[string]bool{},
		fields:  map[reflect.Type]map[string]reflect.Type{},
	}
	for _, n := range doc.Content {
		idx.walk(n, place{}, reflect.TypeFor[Config]())
	}
	return idx
}

// walk indexes n, the value at at, which decodes into a t (nil if it
// decodes into nothing: under an unknown key).
func (idx *index) walk(n *yaml.Node, at place, t reflect.Type) {
	idx.values[n.Line] = append(idx.values[n.Line], valueAt{n, at, t})
	switch n.Kind {
	case yaml.MappingNode:
		if k := len(n.Content) / 2; k > maxKeys && idx.tooManyKeys == nil {
			idx.tooManyKeys = &Error{Line: n.Line, Path: at.path, Err: fmt.Errorf("a mapping of %d keys, more than the %d any section may have", k, maxKeys)}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ka := keyAt{k.Line, k.Value}
			if _, dup := idx.parents[ka]; !dup {
				idx.parents[ka] = at
			}
			if k.Value == "<<" { // a merge: its keys are at's
				idx.walk(v, at, t)
				continue
			}
			child := place{joinPath(at.path, k.Value), joinKey(at.key, k.Value)}
			if _, dup := idx.lines[child.key]; !dup {
				idx.lines[child.key] = k.Line
			}
			idx.walk(v, child, idx.fieldType(t, k.Value))
		}
	case yaml.SequenceNode:
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			elem = t.Elem()
		}
		for i, item := range n.Content {
			p := place{fmt.Sprintf("%s[%d]", at.path, i), fmt.Sprintf("%s[%d]", at.key, i)}
			if at.key == "listeners" {
				p.path = listenerPath(i, scalarField(item, "name"))
			}
			if _, dup := idx.lines[p.key]; !dup {
				idx.lines[p.key] = item.Line
			}
			idx.walk(item, p, elem)
		}
	case yaml.ScalarNode, yaml.AliasNode:
		idx.checkInteger(n, at, t)
	}
	// Aliases are not followed (but to a scalar, by checkInteger): they
	// may form cycles, and yaml.v3 reports problems inside them at the
	// anchor's line, which is indexed already.
}

// fieldType returns the type of the field of struct type t that YAML key
// names, nil if there is none.
func (idx *index) fieldType(t reflect.Type, key string) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	fields, ok := idx.fields[t]
	if !ok {
		fields = map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			switch {
			case !f.IsExported() || name == "-":
				continue
			case name == "":
				name = strings.ToLower(f.Name) // yaml.v3's default
			}
			fields[name] = f.Type
		}
		idx.fields[t] = fields
	}
	return fields[key]
}

// checkInteger records n, at at, if it is a float (yaml.v3's !!float:
// "8.5", "1e4", ".inf") that would be decoded into an integer field of type
// t. Durations are left to yaml.v3, which refuses bare numbers.
func (idx *index) checkInteger(n *yaml.Node, at place, t reflect.Type) {
	if t == nil || t == reflect.TypeFor[time.Duration]() {
		return
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
	default:
		return
	}
	s := n
	if s.Kind == yaml.AliasNode {
		s = s.Alias
	}
	if s == nil || s.Kind != yaml.ScalarNode || s.ShortTag() != "!!float" {
		return
	}
	err := fmt.Errorf("%s is not an integer", s.Value)
	if f, perr := strconv.ParseFloat(strings.ReplaceAll(s.Value, "_", ""), 64); perr == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		err = fmt.Errorf("%s is not an integer: write %d", s.Value, int64(f))
	}
	idx.floats = append(idx.floats, &Error{Line: n.Line, Path: at.path, Err: err, key: at.key})
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

var (
	lineMessage  = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownField = regexp.MustCompile(`^line (\d+): field (.*) not found in type \S+$`)
	duplicateKey = regexp.MustCompile(`^line (\d+): mapping key (".*") already defined at line (\d+)$`)
	alreadySet   = regexp.MustCompile(`^line (\d+): field (.*) already set in type \S+$`)
	cannotDecode = regexp.MustCompile("^line (\\d+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
)

// translate rewords one of yaml.TypeError's messages, noting in idx the
// mappings with an unknown key and the values that could not be decoded. A
// message it does not recognise is kept as it is.
func (idx *index) translate(msg string) *Error {
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		at, ok := idx.parents[keyAt{line, m[2]}]
		if ok {
			idx.unknown[at.key] = true
		}
		return &Error{Line: line, Path: at.path, Err: fmt.Errorf("unknown key %q", m[2]), key: joinKey(at.key, m[2])}
	}
	if m := duplicateKey.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if key, err := strconv.Unquote(m[2]); err == nil {
			at := idx.parents[keyAt{line, key}]
			idx.fail(at.key) // yaml.v3 decodes nothing of the mapping
			return &Error{Line: line, Path: at.path, Err: fmt.Errorf("duplicate key %q (first at line %s)", key, m[3]), key: joinKey(at.key, key)}
		}
	}
	if m := alreadySet.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		at := idx.parents[keyAt{line, m[2]}]
		return &Error{Line: line, Path: at.path, Err: fmt.Errorf("duplicate key %q", m[2]), key: joinKey(at.key, m[2])}
	}
	if m := cannotDecode.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		v, ok := idx.value(line, m[2], m[3], m[4])
		if !ok {
			// A value reached through an alias, reported at the anchor's
			// line: which field it is in is not known, nor what else
			// yaml.v3 left out, so no check is worth running.
			idx.fail("")
			v.path, v.key = "", ""
		} else {
			idx.fail(v.key)
		}
		return &Error{Line: line, Path: v.path, Err: errors.New(idx.wrongType(v, m[4])), key: v.key}
	}
	// A message not known: what yaml.v3 left out is not known either.
	idx.fail("")
	if m := lineMessage.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Line: line, Err: errors.New(m[2])}
	}
	return &Error{Err: errors.New(msg)}
}

// fail notes that the value at key could not be decoded. If it is a list
// item, yaml.v3 left it out of the list, and the items after it moved up
// one place: the list as a whole is noted, its items' places being wrong.
func (idx *index) fail(key string) {
	idx.failed[key] = true
	if strings.HasSuffix(key, "]") {
		idx.failed[parentKey(key)] = true
	}
}

// wrongType says that v could not be decoded into goType.
func (idx *index) wrongType(v valueAt, goType string) string {
	if v.node == nil {
		return fmt.Sprintf("want %s", typeName(goType))
	}
	if goType == "time.Duration" {
		if v.node.Kind == yaml.ScalarNode {
			return fmt.Sprintf("invalid duration %s: write a number with a unit, such as \"30s\" or \"15m\"", describe(v.node))
		}
		return fmt.Sprintf("want a duration such as \"30s\", got %s", describe(v.node))
	}
	return fmt.Sprintf("want %s, got %s", typeName(goType), describe(v.node))
}

// value finds the node yaml.v3 could not decode into goType: the one on
// line with the given tag, whose text starts as yaml.v3 shows it
// (shortened to 7 characters and "..." when longer than 10), and that
// decodes into goType. ok is false if there is none of that type; v is
// then the first of the others, if any.
func (idx *index) value(line int, tag, shown, goType string) (v valueAt, ok bool) {
	shown = strings.TrimSuffix(shown, "...")
	for _, c := range idx.values[line] {
		n := c.node
		if n.ShortTag() != tag {
			continue
		}
		if n.Kind == yaml.ScalarNode && !strings.HasPrefix(n.Value, shown) {
			continue
		}
		if c.typ != nil && c.typ.String() == goType {
			return c, true
		}
		if v.node == nil {
			v = c
		}
	}
	return v, false
}

// locate sets e.Line from the index: the line of e's key, or else of the
// first of e.also in the file, or else of the nearest mapping or list item
// holding e's key. It reports whether e is worth showing beside the
// decoding problems: not if its key or one of e.also, or a mapping or list
// holding them, could not be decoded (the value is a default or a
// truncation: the decoding problem says what is wrong), nor if its key is
// absent from a mapping that holds an unknown key (likely the same key
// misspelt). idx may be nil: an empty file, where no problem has a line.
func (idx *index) locate(e *Error) bool {
	if idx == nil {
		return true
	}
	for _, key := range append([]string{e.key}, e.also...) {
		for k := key; ; k = parentKey(k) {
			if idx.failed[k] {
				return false
			}
			if k == "" {
				break
			}
		}
	}
	if line, ok := idx.lines[e.key]; ok {
		e.Line = line
		return true
	}
	for _, k := range e.also {
		if line, ok := idx.lines[k]; ok {
			e.Line = line
			return !idx.unknown[parentKey(e.key)]
		}
	}
	for k := parentKey(e.key); ; k = parentKey(k) {
		line, ok := idx.lines[k]
		if ok || k == "" {
			e.Line = line
			return !idx.unknown[k]
		}
	}
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

// typeName names, in the file's terms, the Go type yaml.v3 decoded into.
func typeName(t string) string {
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
