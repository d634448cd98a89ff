package operon

// Objects as handlers see them. The SDK does not depend on k8s.io/apimachinery (it would pull
// in most of Kubernetes' module graph for a map with accessors): an Object is the decoded JSON
// of a Kubernetes object, with dotted-path accessors and Decode into any struct — including
// the typed structs of k8s.io/api, when the operator imports them itself.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Object is a Kubernetes object (or any JSON object) as decoded from the wire: nested
// map[string]any, []any, string, bool, nil and json.Number. Numbers stay json.Number so that
// integers keep every digit (the contract's reason to send JSON rather than protobuf Struct);
// use [Object.Int] and [Object.Float], or [Object.Decode] into a struct.
type Object map[string]any

// decodeJSON parses UTF-8 JSON with numbers as json.Number. Empty input is nil.
func decodeJSON(raw []byte) (any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	return v, nil
}

// parseObject parses a JSON object; anything else is an error.
func parseObject(raw []byte) (Object, error) {
	v, err := decodeJSON(raw)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("expected a JSON object, got %s", describe(v))
	}
	return Object(m), nil
}

func describe(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// splitPath splits a dotted path ("spec.template.metadata"); an empty path is the object.
func splitPath(path string) []string {
	if path == "" {
		return nil
	}
	return strings.Split(path, ".")
}

// lookup follows path through nested objects (and arrays, by decimal index).
func lookup(v any, path []string) (any, bool) {
	for _, key := range path {
		switch node := v.(type) {
		case map[string]any:
			next, ok := node[key]
			if !ok {
				return nil, false
			}
			v = next
		case Object:
			next, ok := node[key]
			if !ok {
				return nil, false
			}
			v = next
		case []any:
			i, err := strconv.Atoi(key)
			if err != nil || i < 0 || i >= len(node) {
				return nil, false
			}
			v = node[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// Get returns the value at a dotted path ("spec.html", "spec.ports.0.port") and whether it
// exists. An empty path is the whole object.
func (o Object) Get(path string) (any, bool) {
	return lookup(map[string]any(o), splitPath(path))
}

// String returns the string at path, or "" when it is absent or not a string.
func (o Object) String(path string) string {
	v, _ := o.Get(path)
	s, _ := v.(string)
	return s
}

// Int returns the integer at path; ok is false when it is absent or not an integer.
func (o Object) Int(path string) (n int64, ok bool) {
	v, _ := o.Get(path)
	switch x := v.(type) {
	case json.Number:
		n, err := x.Int64()
		return n, err == nil
	case float64:
		return int64(x), float64(int64(x)) == x
	case int:
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

// Float returns the number at path; ok is false when it is absent or not a number.
func (o Object) Float(path string) (f float64, ok bool) {
	v, _ := o.Get(path)
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}

// Bool returns the boolean at path, or false when it is absent or not a boolean.
func (o Object) Bool(path string) bool {
	v, _ := o.Get(path)
	b, _ := v.(bool)
	return b
}

// Map returns the object at path, or nil when it is absent or not an object.
func (o Object) Map(path string) Object {
	v, _ := o.Get(path)
	switch m := v.(type) {
	case map[string]any:
		return Object(m)
	case Object:
		return m
	}
	return nil
}

// Name is metadata.name.
func (o Object) Name() string { return o.String("metadata.name") }

// Namespace is metadata.namespace ("" for cluster-scoped objects).
func (o Object) Namespace() string { return o.String("metadata.namespace") }

// UID is metadata.uid.
func (o Object) UID() string { return o.String("metadata.uid") }

// Generation is metadata.generation (0 when absent).
func (o Object) Generation() int64 {
	n, _ := o.Int("metadata.generation")
	return n
}

// Labels are metadata.labels (string values only).
func (o Object) Labels() map[string]string { return o.stringMap("metadata.labels") }

// Annotations are metadata.annotations (string values only).
func (o Object) Annotations() map[string]string { return o.stringMap("metadata.annotations") }

func (o Object) stringMap(path string) map[string]string {
	out := map[string]string{}
	for k, v := range o.Map(path) {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

// Decode decodes the object into out (a pointer to a struct, a map, …) with encoding/json:
// `json` struct tags apply, unknown fields are ignored.
func (o Object) Decode(out any) error {
	return decodeInto(map[string]any(o), out)
}

// DecodeField decodes the value at a dotted path into out; an absent value is an error.
func (o Object) DecodeField(path string, out any) error {
	v, ok := o.Get(path)
	if !ok {
		return fmt.Errorf("%s is absent", path)
	}
	return decodeInto(v, out)
}

func decodeInto(v any, out any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// DiffEntry is one change between the old and the new state, as the core computes it (Kopf's
// diff form): Op is "add", "change" or "remove"; Path is the field's path as keys.
type DiffEntry struct {
	Op   string
	Path []string
	Old  any
	New  any
}

// Diff is the list of changes of an update, in the core's order.
type Diff []DiffEntry

// parseDiff parses the core's diff_json: a JSON list of [op, path, old, new].
func parseDiff(raw []byte) (Diff, error) {
	v, err := decodeJSON(raw)
	if err != nil || v == nil {
		return nil, err
	}
	items, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("expected a JSON array, got %s", describe(v))
	}
	diff := make(Diff, 0, len(items))
	for i, item := range items {
		tuple, ok := item.([]any)
		if !ok || len(tuple) != 4 {
			return nil, fmt.Errorf("entry %d: expected [op, path, old, new]", i)
		}
		op, ok := tuple[0].(string)
		if !ok {
			return nil, fmt.Errorf("entry %d: the op is not a string", i)
		}
		var path []string
		if parts, ok := tuple[1].([]any); ok {
			for _, p := range parts {
				s, ok := p.(string)
				if !ok {
					s = fmt.Sprint(p)
				}
				path = append(path, s)
			}
		}
		diff = append(diff, DiffEntry{Op: op, Path: path, Old: tuple[2], New: tuple[3]})
	}
	return diff, nil
}

// Changed reports whether the dotted path, or anything below or above it, changed.
func (d Diff) Changed(path string) bool {
	want := splitPath(path)
	for _, e := range d {
		n := min(len(want), len(e.Path))
		same := true
		for i := range n {
			if want[i] != e.Path[i] {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}
