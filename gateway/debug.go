//go:build querydebug

package gateway

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"sort"

	"github.com/allezon/allezon/schemas"
)

// DebugBuild reports whether query answers are checked against the
// expected answer in the request body (go build -tags querydebug).
const DebugBuild = true

// debugCompare checks the answer the gateway computed against the expected
// answer the testing platform put in the request body. On a difference it
// logs both and counts the mismatch; the caller answers with its own
// result either way.
func debugCompare(log *slog.Logger, endpoint, rid string, expected, got []byte) {
	if len(bytes.TrimSpace(expected)) == 0 {
		return
	}
	var same bool
	var err error
	if endpoint == endpointUserProfiles {
		same, err = sameProfiles(expected, got)
	} else {
		same, err = sameAggregates(expected, got)
	}
	if err != nil {
		log.Warn("debug: expected answer unreadable", "request_id", rid, "endpoint", endpoint, "err", err)
		return
	}
	if !same {
		debugMismatches.WithLabelValues(endpoint).Inc()
		log.Warn("debug: answer differs from expected", "request_id", rid, "endpoint", endpoint,
			"expected", string(expected), "got", string(got))
	}
}

type profileAnswer struct {
	Cookie string            `json:"cookie"`
	Views  []json.RawMessage `json:"views"`
	Buys   []json.RawMessage `json:"buys"`
}

// sameProfiles compares two /user_profiles answers tag by tag in canonical
// form; tags with the same time may come in any order (SPEC).
func sameProfiles(expected, got []byte) (bool, error) {
	var e, g profileAnswer
	if err := json.Unmarshal(expected, &e); err != nil {
		return false, err
	}
	if err := json.Unmarshal(got, &g); err != nil {
		return false, err
	}
	if e.Cookie != g.Cookie {
		return false, nil
	}
	for _, pair := range [][2][]json.RawMessage{{e.Views, g.Views}, {e.Buys, g.Buys}} {
		if (pair[0] == nil) != (pair[1] == nil) { // null or missing is not []
			return false, nil
		}
		ce, err := canonicalTags(pair[0])
		if err != nil {
			return false, err
		}
		cg, err := canonicalTags(pair[1])
		if err != nil {
			return false, err
		}
		if !reflect.DeepEqual(ce, cg) {
			return false, nil
		}
	}
	return true, nil
}

// canonicalTags re-encodes each tag canonically and sorts runs of equal
// time, so two lists that differ only in the order of ties compare equal.
func canonicalTags(raw []json.RawMessage) ([]string, error) {
	tags := make([]schemas.UserTag, len(raw))
	out := make([]string, len(raw))
	for i, r := range raw {
		if err := schemas.DecodeUserTag(r, &tags[i]); err != nil {
			return nil, err
		}
		out[i] = string(schemas.AppendUserTagJSON(nil, &tags[i]))
	}
	for i := 0; i < len(out); {
		j := i + 1
		for j < len(out) && tags[j].TimeMs == tags[i].TimeMs {
			j++
		}
		sort.Strings(out[i:j])
		i = j
	}
	return out, nil
}

type aggregatesAnswer struct {
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
}

func sameAggregates(expected, got []byte) (bool, error) {
	var e, g aggregatesAnswer
	if err := json.Unmarshal(expected, &e); err != nil {
		return false, err
	}
	if err := json.Unmarshal(got, &g); err != nil {
		return false, err
	}
	return reflect.DeepEqual(e, g), nil
}
