package loadgen

import (
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	for _, us := range []uint64{0, 1, 31, 32, 33, 63, 64, 65, 1000, 123456, 1 << 40} {
		b := bucketOf(us)
		if up := bucketUpper(b); us > up {
			t.Errorf("bucketOf(%d) = %d with upper %d below the value", us, b, up)
		}
		if b > 0 {
			if low := bucketUpper(b - 1); us <= low {
				t.Errorf("bucketOf(%d) = %d but bucket %d already reaches %d", us, b, b-1, low)
			}
		}
		if up := bucketUpper(b); us >= subBuckets && float64(up-us) > float64(us)/subBuckets {
			t.Errorf("bucket of %d reaches %d: error above 1/%d", us, up, subBuckets)
		}
	}
}

func TestQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.9, 900 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}}
	for _, tt := range tests {
		got := h.quantile(tt.q)
		if got < tt.want || float64(got-tt.want) > float64(tt.want)/subBuckets {
			t.Errorf("quantile(%v) = %v, want %v within 1/%d above", tt.q, got, tt.want, subBuckets)
		}
	}
	if h.max != time.Second {
		t.Errorf("max = %v", h.max)
	}
	var empty histogram
	if empty.quantile(0.5) != 0 {
		t.Error("empty histogram has a quantile")
	}
}
