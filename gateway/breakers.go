package gateway

import (
	"errors"

	"github.com/allezon/allezon/gateway/breaker"
	"github.com/allezon/allezon/gateway/profiles"
	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/prometheus/client_golang/prometheus"
)

// Backend names: the backend label of the metrics, and the names /health
// reports the backends by.
const (
	backendProfiles   = "profiles"
	backendEvents     = "events"
	backendAggregates = "aggregates"
)

var backendNames = [...]string{backendProfiles, backendEvents, backendAggregates}

// breakers are the gateway's circuit breakers, one per backend: the
// profile store (Append and Read share it), the event log (Publish) and
// the aggregates store (Query). A handler asks the backend's breaker
// before the call and reports the call's end after it; while a breaker is
// open the handler answers 503 at once, with Retry-After set to the rest
// of the cool-down, instead of waiting BackendTimeout on a backend that is
// down.
type breakers struct {
	profiles, events, aggregates *backendBreaker
}

// backendBreaker is one backend's breaker with its metrics resolved.
type backendBreaker struct {
	*breaker.Breaker
	rejected prometheus.Counter
}

// breakerProbes is how many calls a half-open breaker lets through at
// once: a few, so that one probe stuck until its deadline does not hold
// back a backend that answers the others.
const breakerProbes = 3

func newBreakers(cfg *Config) breakers {
	newOne := func(name string) *backendBreaker {
		// The series start at 0 (closed, metrics.go's init); a
		// process has one gateway.
		state := breakerState.WithLabelValues(name)
		var toState [len(breaker.States)]prometheus.Counter
		for _, st := range breaker.States {
			toState[st] = breakerTransitions.WithLabelValues(name, st.String())
		}
		log := cfg.Logger.With("backend", name)
		return &backendBreaker{
			Breaker: breaker.New(breaker.Config{
				Name:     name,
				Failures: cfg.BreakerFailures,
				Cooldown: cfg.BreakerCooldown,
				Probes:   breakerProbes,
				OnTransition: func(from, to breaker.State) {
					state.Set(float64(to))
					toState[to].Inc()
					if to == breaker.Open {
						log.Warn("circuit breaker open: calls fail fast", "from", from.String(), "cooldown", cfg.BreakerCooldown)
					} else {
						log.Info("circuit breaker "+to.String(), "from", from.String())
					}
				},
			}),
			rejected: breakerRejected.WithLabelValues(name),
		}
	}
	return breakers{
		profiles:   newOne(backendProfiles),
		events:     newOne(backendEvents),
		aggregates: newOne(backendAggregates),
	}
}

// byName is the breaker of the backend /health reports as name, or nil.
func (b *breakers) byName(name string) *backendBreaker {
	switch name {
	case backendProfiles:
		return b.profiles
	case backendEvents:
		return b.events
	case backendAggregates:
		return b.aggregates
	}
	return nil
}

// allow asks the breaker for a call; a rejection (an *breaker.OpenError)
// is counted and must be answered without calling the backend.
func (bb *backendBreaker) allow() (breaker.Ticket, error) {
	t, err := bb.Allow()
	if err != nil {
		bb.rejected.Inc()
	}
	return t, err
}

// done reports the end of a call allow admitted. Only outages and
// timeouts are failures: an error, or a missed deadline (the context is
// the gateway's, never cancelled by a client). A store refusing the
// request's data (isDataError) answered, so it counts as a success: one
// client's bad input must not open the breaker for everyone.
func (bb *backendBreaker) done(t breaker.Ticket, err error) {
	bb.Done(t, err != nil && !isDataError(err))
}

// isDataError reports whether a store refused the request's data itself
// (what a retry would get again): a 400, not an outage.
func isDataError(err error) bool {
	return errors.Is(err, aggregates.ErrData) || errors.Is(err, profiles.ErrData)
}
