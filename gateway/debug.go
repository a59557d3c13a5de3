//go:build querydebug

package gateway

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"slices"
	"sort"

	"github.com/allezon/allezon/schemas"
)

// DebugBuild reports whether query answers are checked against the
// expected answer in the request body (go build -tags querydebug).
const DebugBuild = true

// debugCompare checks the answer the gateway computed against the expected
// answer the testing platform put in the request body. On a difference it
// logs both and counts the mismatch; the caller answers with its own
// result either way. limit is a /user_profiles query's limit.
func debugCompare(log *slog.Logger, endpoint, rid string, limit int, expected, got []byte) {
	if len(bytes.TrimSpace(expected)) == 0 {
		return
	}
	var same bool
	var err error
	if endpoint == endpointUserProfiles {
		same, err = sameProfiles(expected, got, limit)
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
// form; tags with the same time may come in any order (SPEC). When a list
// is limit long, the cut may have gone through tags of one millisecond,
// and SPEC leaves open which of them are kept: the oldest millisecond of
// such a list needs the same number of tags, not the same ones.
func sameProfiles(expected, got []byte, limit int) (bool, error) {
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
		ce, te, err := canonicalTags(pair[0])
		if err != nil {
			return false, err
		}
		cg, tg, err := canonicalTags(pair[1])
		if err != nil {
			return false, err
		}
		if !sameTagLists(ce, te, cg, tg, limit) {
			return false, nil
		}
	}
	return true, nil
}

// sameTagLists compares two canonical lists (canonicalTags) of times te and
// tg. A list cut at limit may differ in which tags of its last millisecond
// it holds.
func sameTagLists(ce []string, te []int64, cg []string, tg []int64, limit int) bool {
	if len(ce) != len(cg) {
		return false
	}
	n := len(ce)
	if n == 0 || n != limit {
		return slices.Equal(ce, cg)
	}
	last := n - 1 // first tag of the last millisecond
	for last > 0 && te[last-1] == te[n-1] {
		last--
	}
	for i := last; i < n; i++ {
		if tg[i] != te[n-1] {
			return false
		}
	}
	return slices.Equal(ce[:last], cg[:last])
}

// canonicalTags re-encodes each tag canonically and sorts runs of equal
// time, so two lists that differ only in the order of ties compare equal;
// times are the tags' times in the same order.
func canonicalTags(raw []json.RawMessage) (out []string, times []int64, err error) {
	out = make([]string, len(raw))
	times = make([]int64, len(raw))
	var tag schemas.UserTag
	for i, r := range raw {
		if err := schemas.DecodeUserTag(r, &tag); err != nil {
			return nil, nil, err
		}
		out[i] = string(schemas.AppendUserTagJSON(nil, &tag))
		times[i] = tag.TimeMs
	}
	for i := 0; i < len(out); {
		j := i + 1
		for j < len(out) && times[j] == times[i] {
			j++
		}
		sort.Strings(out[i:j])
		i = j
	}
	return out, times, nil
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
