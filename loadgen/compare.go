package loadgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
)

// The comparisons parse both answers instead of comparing bytes, so that
// only what SPEC.md fixes is checked: key order and white space are free,
// and tags of one cookie with the same time may come in any order. Values
// are decoded with UseNumber and compared by their literal text and JSON
// type, so a time written without its three millisecond digits or without
// Z, a product_id that came as a number and goes back as a string (or
// 12.50 given back as 12.5), a count given as a number instead of a string,
// a missing or an extra field, or null for an empty list, all differ.

// decodeStrict decodes one JSON value with numbers kept as literals and
// nothing after it.
func decodeStrict(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if len(bytes.TrimLeft(b[d.InputOffset():], " \t\r\n")) != 0 {
		return nil, fmt.Errorf("data after the JSON value")
	}
	return v, nil
}

// decodeObjects parses the expected and the received answer as JSON
// objects with the same number of keys (named in want), or says what is
// wrong with them.
func decodeObjects(expected, got []byte, want string) (eo, g map[string]any, diff string) {
	e, err := decodeStrict(expected)
	if err != nil {
		return nil, nil, "expected body does not parse (loadgen bug): " + err.Error()
	}
	gv, err := decodeStrict(got)
	if err != nil {
		return nil, nil, "body is not JSON: " + err.Error()
	}
	eo, _ = e.(map[string]any)
	g, ok := gv.(map[string]any)
	if !ok {
		return nil, nil, "body is not a JSON object"
	}
	if len(g) != len(eo) {
		return nil, nil, fmt.Sprintf("body has keys %v, want %s", keys(g), want)
	}
	return eo, g, ""
}

// compareProfiles reports whether got is a correct answer given the exact
// expected one, and if not, what differs first.
func compareProfiles(expected, got []byte) (bool, string) {
	if bytes.Equal(expected, got) {
		return true, ""
	}
	eo, go_, diff := decodeObjects(expected, got, "cookie, views, buys")
	if diff != "" {
		return false, diff
	}
	if !reflect.DeepEqual(go_["cookie"], eo["cookie"]) {
		return false, fmt.Sprintf("cookie is %s, want %s", show(go_["cookie"]), show(eo["cookie"]))
	}
	for _, list := range []string{"views", "buys"} {
		el, _ := eo[list].([]any)
		gl, ok := go_[list].([]any)
		if !ok {
			return false, fmt.Sprintf("%s is %s, want a list", list, show(go_[list]))
		}
		if diff := compareTagLists(el, gl); diff != "" {
			return false, list + ": " + diff
		}
	}
	return true, ""
}

// compareTagLists compares two newest-first lists of tags, equal-time runs
// as multisets.
func compareTagLists(expected, got []any) string {
	if len(got) != len(expected) {
		return fmt.Sprintf("%d tags, want %d", len(got), len(expected))
	}
	for i := 0; i < len(expected); {
		t := tagTime(expected[i])
		j := i + 1
		for j < len(expected) && tagTime(expected[j]) == t {
			j++
		}
		ew := canonicalAll(expected[i:j])
		gw := canonicalAll(got[i:j])
		slices.Sort(ew)
		slices.Sort(gw)
		for k := range ew {
			if ew[k] != gw[k] {
				return fmt.Sprintf("tag %d is %s, want %s", i+k, gw[k], ew[k])
			}
		}
		i = j
	}
	return ""
}

// tagTime is the raw "time" of a decoded tag ("" if absent).
func tagTime(v any) string {
	o, _ := v.(map[string]any)
	s, _ := o["time"].(string)
	return s
}

// canonicalAll encodes each value canonically: encoding/json sorts object
// keys and writes json.Number literals as they came.
func canonicalAll(vs []any) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = show(v)
	}
	return out
}

func show(v any) string {
	if v == nil {
		return "null"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

func keys(o map[string]any) []string {
	ks := make([]string, 0, len(o))
	for k := range o {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// compareAggregates reports whether got equals the expected aggregates
// answer exactly: same columns, same rows in the same order, every value
// the same JSON string.
func compareAggregates(expected, got []byte) (bool, string) {
	if bytes.Equal(expected, got) {
		return true, ""
	}
	eo, go_, diff := decodeObjects(expected, got, "columns, rows")
	if diff != "" {
		return false, diff
	}
	if !reflect.DeepEqual(go_["columns"], eo["columns"]) {
		return false, fmt.Sprintf("columns are %s, want %s", show(go_["columns"]), show(eo["columns"]))
	}
	er, _ := eo["rows"].([]any)
	gr, ok := go_["rows"].([]any)
	if !ok {
		return false, fmt.Sprintf("rows is %s, want a list", show(go_["rows"]))
	}
	if len(gr) != len(er) {
		return false, fmt.Sprintf("%d rows, want %d", len(gr), len(er))
	}
	for i := range er {
		if !reflect.DeepEqual(gr[i], er[i]) {
			return false, fmt.Sprintf("row %d is %s, want %s", i, show(gr[i]), show(er[i]))
		}
	}
	return true, ""
}
