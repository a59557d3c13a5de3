package schemas

import (
	"errors"
	"testing"
	"time"
)

func TestCheckNotFuture(t *testing.T) {
	const now = int64(1_700_000_000_000)
	day := DefaultMaxFuture.Milliseconds()
	tests := []struct {
		name      string
		timeMs    int64
		maxFuture time.Duration
		wantErr   bool
	}{
		{"now", now, DefaultMaxFuture, false},
		{"far past", -62_135_596_800_000, DefaultMaxFuture, false},
		{"at the horizon", now + day, DefaultMaxFuture, false},
		{"1 ms past the horizon", now + day + 1, DefaultMaxFuture, true},
		{"year 9999", 253_402_300_799_999, DefaultMaxFuture, true},
		{"check off", 253_402_300_799_999, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckNotFuture(tt.timeMs, now, tt.maxFuture)
			if (err != nil) != tt.wantErr {
				t.Fatalf("CheckNotFuture(%d) = %v, want error %v", tt.timeMs, err, tt.wantErr)
			}
			var fe *FieldError
			if err != nil && (!errors.As(err, &fe) || fe.Field != "time") {
				t.Fatalf("error %v is not a FieldError on time", err)
			}
		})
	}
}
