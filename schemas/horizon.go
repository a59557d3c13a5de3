package schemas

import (
	"errors"
	"time"
)

// DefaultMaxFuture is how far a tag's time may lie ahead of the clock of
// whoever accepts it (the gateway's wall clock; in the pipeline, the event
// record's timestamp). No honest clock is a day ahead, and SPEC's window of
// aggregates is 24 h of event time: a tag beyond it is refused (400) rather
// than let it reach retention (docs/design-notes.md "Retention").
const DefaultMaxFuture = 24 * time.Hour

var errTimeTooFarAhead = errors.New("too far in the future (more than the allowed horizon ahead of the server's clock)")

// CheckNotFuture returns a *FieldError for "time" when timeMs lies more
// than maxFuture after nowMs; maxFuture <= 0 turns the check off.
func CheckNotFuture(timeMs, nowMs int64, maxFuture time.Duration) error {
	if maxFuture > 0 && timeMs-nowMs > maxFuture.Milliseconds() {
		return &FieldError{Field: "time", Err: errTimeTooFarAhead}
	}
	return nil
}
