//go:build !querydebug

package gateway

import "log/slog"

// DebugBuild reports whether query answers are checked against the
// expected answer in the request body (go build -tags querydebug).
const DebugBuild = false

// debugCompare does nothing in a normal build: SPEC says it ignores the
// expected answer in the body.
func debugCompare(*slog.Logger, string, string, int, []byte, []byte) {}
