// Package schemas holds Allezon's domain types and their wire formats: the
// user tag as JSON (SPEC.md, byte-exact) and as Avro (the event log), the
// query time ranges, and the aggregate cells. Every other package speaks in
// these types, so a change of format happens here and nowhere else.
package schemas

// Action is what a user did: VIEW or BUY.
type Action uint8

const (
	View Action = iota
	Buy
)

// NumActions is the number of actions; Action values are 0..NumActions-1.
const NumActions = 2

var actionNames = [NumActions]string{"VIEW", "BUY"}

func (a Action) String() string { return actionNames[a] }

// ParseAction maps "VIEW"/"BUY" (case-sensitive) to an Action.
func ParseAction(s string) (Action, bool) {
	for i, n := range actionNames {
		if s == n {
			return Action(i), true
		}
	}
	return 0, false
}

// Device is the kind of device a tag came from.
type Device uint8

const (
	PC Device = iota
	Mobile
	TV
)

var deviceNames = [...]string{"PC", "MOBILE", "TV"}

func (d Device) String() string { return deviceNames[d] }

// ParseDevice maps "PC"/"MOBILE"/"TV" (case-sensitive) to a Device.
func ParseDevice(s string) (Device, bool) {
	for i, n := range deviceNames {
		if s == n {
			return Device(i), true
		}
	}
	return 0, false
}

// UserTag is one VIEW or BUY event (SPEC.md, "Data").
type UserTag struct {
	// TimeMs is the event time in milliseconds since the Unix epoch, UTC;
	// finer input precision is truncated toward the past.
	TimeMs  int64
	Cookie  string
	Country string
	Device  Device
	Action  Action
	Origin  string
	// ProductID is the string's content, or, when ProductIDIsNumber, the
	// JSON number's literal text exactly as it came, so it is given back
	// as it came.
	ProductID         string
	ProductIDIsNumber bool
	BrandID           string
	CategoryID        string
	Price             int32
}

// Dims is a set of aggregate filter dimensions.
type Dims uint8

const (
	DimOrigin Dims = 1 << iota
	DimBrand
	DimCategory
)

// AllDims is the full set: a Cell with every dimension.
const AllDims = DimOrigin | DimBrand | DimCategory

// Cell identifies one aggregate cell: a minute bucket, an action and the
// three dimensions. The pipeline sums tags into full cells; stores may keep
// rollups over subsets of the dimensions.
type Cell struct {
	Minute     int64 // minutes since the Unix epoch (floor of TimeMs/60000)
	Action     Action
	Origin     string
	BrandID    string
	CategoryID string
}

// Totals are the aggregates of a cell: how many tags, and the 64-bit sum
// of their prices.
type Totals struct {
	Count    int64
	SumPrice int64
}

// Add adds o to t.
func (t *Totals) Add(o Totals) {
	t.Count += o.Count
	t.SumPrice += o.SumPrice
}

// AggregateQuery asks for per-minute totals of one action over the minutes
// [FromMinute, ToMinute), filtered by equality on the dimensions in Filter.
type AggregateQuery struct {
	Action     Action
	FromMinute int64
	ToMinute   int64
	Filter     Dims
	Origin     string // used when Filter has DimOrigin
	BrandID    string // used when Filter has DimBrand
	CategoryID string // used when Filter has DimCategory
}

// Minutes is the number of minute buckets the query covers.
func (q *AggregateQuery) Minutes() int { return int(q.ToMinute - q.FromMinute) }

// Matches reports whether a full cell falls under the query.
func (q *AggregateQuery) Matches(c *Cell) bool {
	return c.Action == q.Action && c.Minute >= q.FromMinute && c.Minute < q.ToMinute &&
		(q.Filter&DimOrigin == 0 || c.Origin == q.Origin) &&
		(q.Filter&DimBrand == 0 || c.BrandID == q.BrandID) &&
		(q.Filter&DimCategory == 0 || c.CategoryID == q.CategoryID)
}

// MinuteOf is the minute bucket of an event time in ms (floor division, so
// times before 1970 land in the right bucket too).
func MinuteOf(ms int64) int64 {
	m := ms / 60000
	if ms%60000 < 0 {
		m--
	}
	return m
}

// CellOf is the full aggregate cell a tag adds to.
func CellOf(t *UserTag) Cell {
	return Cell{Minute: MinuteOf(t.TimeMs), Action: t.Action, Origin: t.Origin, BrandID: t.BrandID, CategoryID: t.CategoryID}
}
