// Package loadgen re-creates the lab's testing platform (SPEC.md, "The
// testing platform"): it replays a deterministic stream of user tags
// against a running gateway, interleaves /user_profiles and /aggregates
// queries that carry their expected answers (debug mode), checks every
// answer itself against a model of what the server must answer, and
// reports throughput, errors, time-outs, latency percentiles and
// mismatches per endpoint.
//
// # The stream
//
// Tag i has event time Start + i ms, whatever the send rate, and content
// that is a pure function of (seed, Start, i) (see Generator): ~1,000,000
// cookies, a quarter of the tags on a Zipf-distributed hot set (so some
// cookies pass 200 tags per action within a minute), a few cookies with
// characters that must be percent-encoded in a path; BUY one tag in five;
// prices mostly below 10,000 with 1 % near the top of int32 (minute sums
// overflow 32 bits); product_id mostly a string, sometimes a JSON number,
// given back as it came.
//
// # What a query may expect (fairness)
//
// The model is fed only with tags that got their 204, and knows which are
// still in flight or failed. Tags are numbered in send order; the settled
// prefix is the longest run 0..k-1 whose requests have all ended. For a
// freshness F (10 s for profiles, 1 minute for aggregates, SPEC.md), the
// watermark is the event time below which every tag ended at least F ago;
// it is computed from the send order, not from the newest acknowledgement,
// because requests finish out of order.
//
// A /user_profiles query (cookie, [from, to), limit) is asked only when
// its answer is determined by what SPEC.md obliges the server to keep:
// to <= watermark; the expected list per action is the newest `limit` tags
// of the range, each acknowledged at least F ago; the limit does not cut
// between two tags of the same millisecond; and every expected tag is
// among the 200 newest of its cookie and action counting every tag SENT so
// far (acknowledged, in flight or failed, since any of them may be stored;
// a tag tied in time with others counts them all as newer). When the
// range holds fewer than `limit` tags, the expected list is the whole
// range, so none of the range may lie beyond those 200 either. Equal-time
// tags may come back in any order. Because newer tags of the cookie may be
// sent while the query runs, a wrong answer is checked once more against
// the state at the time of the answer; a query that became unfair is
// counted as skipped, not as a mismatch.
//
// An /aggregates query covers 1..10 whole minutes ending at or before the
// minute whose tags all ended at least F ago, avoids minutes holding a
// failed tag (see below), and takes its filter values from probe tags
// inside the range (64 fixed positions per minute, registered ten minutes
// ahead so the model sums exactly those filters; its memory does not grow
// with the rate). The expected body is SPEC.md's, byte for byte: a row for
// every minute, every value a string, sums in 64 bits.
//
// A query whose answer is not determined is not sent; it is counted as
// skipped, by reason.
//
// # Failures and restarts
//
// A tag whose request failed (transport error, client time-out, any
// status but 204) may or may not have been stored and counted. Its
// profile entry is never expected (a query whose expected list would need
// it is skipped), and its minute is "uncertain": aggregate queries avoid
// it for the rest of the run. With Config.Retry, the tag is re-posted with
// the same content after a back-off until it gets its 204 (the profile
// store deduplicates identical tags, so profile queries may expect it again
// once acknowledged at least F ago); its minute stays uncertain, since the
// pipeline may have counted the first attempt. Failures inside a declared
// outage window (Config.Outages) are reported apart and do not fail the
// verdict; with Retry, a tag never acknowledged by the end does.
//
// What a crash test can show follows from this: the minute holding the
// requests cut by a kill -9 is never asked about, so to check that the
// pipeline neither loses nor double-counts its uncommitted deltas of the
// previous minute across the restart, kill shortly (one to two seconds)
// after an event-minute boundary. With Start on a whole minute and the
// target rate reached, event time runs with the wall clock: kill at
// k×60 s + ~1.5 s of the run, declare an outage window around it, and
// give Settle at least the aggregate freshness plus a few seconds so the
// last minutes are asked about too.
//
// # Comparison
//
// Answers are parsed, not compared as bytes: profiles compare the cookie
// and each list tag by tag, equal-time runs as multisets; aggregates
// compare columns and rows exactly. Values keep their JSON type and
// literal text, so a time without its three millisecond digits and Z, or a
// product_id of the wrong JSON type, is a mismatch.
//
// # Running the same store twice
//
// The model knows only its own run. Against a store that already holds a
// run, use a later Start (e.g. a day later): older tags of the same
// cookies then never enter the ranges asked, nor the 200 newest.
package loadgen
