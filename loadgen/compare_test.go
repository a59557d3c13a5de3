package loadgen

import (
	"strings"
	"testing"
)

const (
	tagA  = `{"time":"2022-03-22T12:15:00.123Z","cookie":"c","country":"PL","device":"PC","action":"VIEW","origin":"o","product_info":{"product_id":"p1","brand_id":"b","category_id":"k","price":10}}`
	tagA2 = `{"time":"2022-03-22T12:15:00.123Z","cookie":"c","country":"DE","device":"TV","action":"VIEW","origin":"o","product_info":{"product_id":12.50,"brand_id":"b","category_id":"k","price":20}}`
	tagB  = `{"time":"2022-03-22T12:15:00.100Z","cookie":"c","country":"PL","device":"PC","action":"VIEW","origin":"o","product_info":{"product_id":"p2","brand_id":"b","category_id":"k","price":30}}`
	// tagAReordered is tagA with its keys in another order and spaces.
	tagAReordered = `{ "cookie":"c", "time":"2022-03-22T12:15:00.123Z","country":"PL","action":"VIEW","device":"PC","origin":"o","product_info":{"price":10,"brand_id":"b","product_id":"p1","category_id":"k"}}`
)

func profileBody(views ...string) string {
	return `{"cookie":"c","views":[` + strings.Join(views, ",") + `],"buys":[]}`
}

func TestCompareProfiles(t *testing.T) {
	expected := profileBody(tagA, tagA2, tagB)
	tests := []struct {
		name  string
		got   string
		equal bool
	}{
		{"identical", expected, true},
		{"equal-time tags swapped", profileBody(tagA2, tagA, tagB), true},
		{"key order and spaces", profileBody(tagAReordered, tagA2, tagB), true},
		{"top-level key order", `{"buys":[],"views":[` + tagA + "," + tagA2 + "," + tagB + `],"cookie":"c"}`, true},
		{"unsorted (oldest first)", profileBody(tagB, tagA, tagA2), false},
		{"dropped tag", profileBody(tagA, tagA2), false},
		{"duplicated tag", profileBody(tagA, tagA, tagB), false},
		{"one field different", profileBody(tagA, tagA2, strings.Replace(tagB, `"price":30`, `"price":31`, 1)), false},
		{"time without milliseconds", profileBody(tagA, tagA2, strings.Replace(tagB, `12:15:00.100Z`, `12:15:00.1Z`, 1)), false},
		{"time without Z", profileBody(tagA, tagA2, strings.Replace(tagB, `00.100Z`, `00.100`, 1)), false},
		{"number product_id as a string", profileBody(tagA, strings.Replace(tagA2, `12.50`, `"12.50"`, 1), tagB), false},
		{"number product_id normalized", profileBody(tagA, strings.Replace(tagA2, `12.50`, `12.5`, 1), tagB), false},
		{"string product_id as a number", `{"cookie":"c","views":[` + strings.Replace(tagA, `"p1"`, `1`, 1) + "," + tagA2 + "," + tagB + `],"buys":[]}`, false},
		{"price as a string", profileBody(tagA, tagA2, strings.Replace(tagB, `"price":30`, `"price":"30"`, 1)), false},
		{"extra field", profileBody(tagA, tagA2, strings.Replace(tagB, `"cookie":"c"`, `"cookie":"c","x":1`, 1)), false},
		{"missing field", profileBody(tagA, tagA2, strings.Replace(tagB, `"country":"PL",`, ``, 1)), false},
		{"null buys", `{"cookie":"c","views":[` + tagA + "," + tagA2 + "," + tagB + `],"buys":null}`, false},
		{"missing buys", `{"cookie":"c","views":[` + tagA + "," + tagA2 + "," + tagB + `]}`, false},
		{"wrong cookie", strings.Replace(expected, `{"cookie":"c"`, `{"cookie":"d"`, 1), false},
		{"tag in the wrong list", `{"cookie":"c","views":[` + tagA + "," + tagA2 + `],"buys":[` + tagB + `]}`, false},
		{"trailing data", expected + "x", false},
		{"not JSON", "oops", false},
	}
	for _, tt := range tests {
		equal, diff := compareProfiles([]byte(expected), []byte(tt.got))
		if equal != tt.equal {
			t.Errorf("%s: equal = %v (%s), want %v", tt.name, equal, diff, tt.equal)
		}
		if !equal && diff == "" {
			t.Errorf("%s: no difference described", tt.name)
		}
	}
}

func TestCompareAggregates(t *testing.T) {
	expected := `{"columns":["1m_bucket","action","origin","count","sum_price"],"rows":[["2022-03-01T00:05:00","BUY","Nike","3","4294967301"],["2022-03-01T00:06:00","BUY","Nike","0","0"]]}`
	tests := []struct {
		name  string
		got   string
		equal bool
	}{
		{"identical", expected, true},
		{"spaces and key order", `{ "rows": [["2022-03-01T00:05:00","BUY","Nike","3","4294967301"], ["2022-03-01T00:06:00","BUY","Nike","0","0"]], "columns": ["1m_bucket","action","origin","count","sum_price"] }`, true},
		{"sum truncated to 32 bits", strings.Replace(expected, "4294967301", "5", 1), false},
		{"count as a number", strings.Replace(expected, `"3"`, `3`, 1), false},
		{"rows swapped", `{"columns":["1m_bucket","action","origin","count","sum_price"],"rows":[["2022-03-01T00:06:00","BUY","Nike","0","0"],["2022-03-01T00:05:00","BUY","Nike","3","4294967301"]]}`, false},
		{"empty minute left out", `{"columns":["1m_bucket","action","origin","count","sum_price"],"rows":[["2022-03-01T00:05:00","BUY","Nike","3","4294967301"]]}`, false},
		{"columns in another order", strings.Replace(expected, `"count","sum_price"]`, `"sum_price","count"]`, 1), false},
		{"bucket with a zone", strings.Replace(expected, `00:05:00"`, `00:05:00Z"`, 1), false},
		{"extra key", strings.Replace(expected, `{"columns"`, `{"x":1,"columns"`, 1), false},
		{"null rows", `{"columns":["1m_bucket","action","origin","count","sum_price"],"rows":null}`, false},
	}
	for _, tt := range tests {
		equal, diff := compareAggregates([]byte(expected), []byte(tt.got))
		if equal != tt.equal {
			t.Errorf("%s: equal = %v (%s), want %v", tt.name, equal, diff, tt.equal)
		}
	}
}
