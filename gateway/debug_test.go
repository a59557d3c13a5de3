//go:build querydebug

package gateway

import "testing"

func TestSameProfiles(t *testing.T) {
	const a = `{"time":"2022-03-22T12:15:00.123Z","cookie":"c","country":"PL","device":"PC","action":"VIEW","origin":"o","product_info":{"product_id":"p","brand_id":"b","category_id":"k","price":1}}`
	const b = `{"time":"2022-03-22T12:15:00.123Z","cookie":"c","country":"PL","device":"PC","action":"VIEW","origin":"o2","product_info":{"product_id":"p","brand_id":"b","category_id":"k","price":1}}`
	const older = `{"time":"2022-03-22T12:14:00.000Z","cookie":"c","country":"PL","device":"TV","action":"VIEW","origin":"o","product_info":{"product_id":7,"brand_id":"b","category_id":"k","price":1}}`
	got := `{"cookie":"c","views":[` + a + `,` + b + `,` + older + `],"buys":[]}`
	tests := []struct {
		name, expected string
		same           bool
	}{
		{"identical", got, true},
		{"ties in other order, other spacing", `{"cookie": "c", "views": [` + b + `, ` + a + `, ` + older + `], "buys": []}`, true},
		{"order across times matters", `{"cookie":"c","views":[` + older + `,` + a + `,` + b + `],"buys":[]}`, false},
		{"missing tag", `{"cookie":"c","views":[` + a + `,` + b + `],"buys":[]}`, false},
		{"other cookie", `{"cookie":"d","views":[` + a + `,` + b + `,` + older + `],"buys":[]}`, false},
		{"null is not []", `{"cookie":"c","views":[` + a + `,` + b + `,` + older + `],"buys":null}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			same, err := sameProfiles([]byte(tt.expected), []byte(got))
			if err != nil {
				t.Fatal(err)
			}
			if same != tt.same {
				t.Fatalf("same = %v, want %v", same, tt.same)
			}
		})
	}
}

func TestSameAggregates(t *testing.T) {
	const got = `{"columns":["1m_bucket","action","count"],"rows":[["2022-03-01T00:05:00","BUY","3"]]}`
	tests := []struct {
		name, expected string
		same           bool
	}{
		{"identical", got, true},
		{"spacing", `{"columns": ["1m_bucket", "action", "count"], "rows": [["2022-03-01T00:05:00", "BUY", "3"]]}`, true},
		{"value", `{"columns":["1m_bucket","action","count"],"rows":[["2022-03-01T00:05:00","BUY","4"]]}`, false},
		{"column order", `{"columns":["action","1m_bucket","count"],"rows":[["2022-03-01T00:05:00","BUY","3"]]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			same, err := sameAggregates([]byte(tt.expected), []byte(got))
			if err != nil {
				t.Fatal(err)
			}
			if same != tt.same {
				t.Fatalf("same = %v, want %v", same, tt.same)
			}
		})
	}
}
