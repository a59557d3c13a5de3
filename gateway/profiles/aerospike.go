package profiles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	as "github.com/aerospike/aerospike-client-go/v7"
	"github.com/aerospike/aerospike-client-go/v7/types"
	"github.com/allezon/allezon/schemas"
	"github.com/cespare/xxhash/v2"
)

// aerospikeSet is the set that holds one record per cookie.
const aerospikeSet = "profiles"

// binNames are the map bins of a profile record, indexed by action.
var binNames = [schemas.NumActions]string{schemas.View: "views", schemas.Buy: "buys"}

const (
	defaultAerospikePort        = 3000
	defaultAerospikeTimeout     = 300 * time.Millisecond
	defaultAerospikeConnTimeout = 10 * time.Second
	defaultAerospikeConns       = 256
)

// aerospikeStore keeps one record per cookie (user key = cookie) with a
// key-ordered CDT map bin per action: map key = the 16-byte entry id
// (appendEntryID: inverted time, then tag hash) as a blob, value = the
// tag's canonical JSON blob. The server orders BYTES map keys "by each
// byte" (Aerospike docs, "Collection Element Ordering and Comparison"),
// and all ids have the same length and the same msgpack header, so the
// map's key order is exactly the id order: index 0 is the newest tag.
//
// Append is one atomic Operate: put the entry, then remove every entry from
// index Keep on. The record thus never holds more than Keep tags per action:
// about 2 x 200 x 250 B = 100 KB for the replay's tags, at most
// 2 x 200 x (schemas.MaxTagJSONBytes + ~25 B of map entry) = 5.2 MB for
// tags at every field limit, under two thirds of Aerospike 8's 8 MiB record limit
// (docs/api.md "Input"). A write the server refuses as data (RECORD_TOO_BIG,
// PARAMETER_ERROR) wraps ErrData.
// Both operations are idempotent (same key, same value; the cut only ever
// removes the oldest), so the client may retry a write that timed out.
//
// Read is one Operate reading both bins: per bin, the count of ids in the
// time range and the values of at most limit entries from the range's
// newest end; the first min(count, limit) of those values are the answer.
// Both operations run under the record lock, so they see one state.
type aerospikeStore struct {
	client    *as.Client
	namespace string
	log       *slog.Logger
	timeout   time.Duration
	write     as.WritePolicy // template for Append
	read      as.WritePolicy // template for Read (Operate takes a WritePolicy)
	mapPolicy *as.MapPolicy
}

// parseAerospikeURL splits "host:3000[,host2:3000]/namespace" into seed
// hosts and the namespace. A host without a port gets 3000.
func parseAerospikeURL(rest string) ([]*as.Host, string, error) {
	hostList, ns, found := strings.Cut(rest, "/")
	if !found || ns == "" || strings.Contains(ns, "/") {
		return nil, "", errors.New("want aerospike://host:port[,host:port]/namespace")
	}
	var hosts []*as.Host
	for _, hp := range strings.Split(hostList, ",") {
		if hp == "" {
			return nil, "", errors.New("empty host in host list")
		}
		host, portStr, err := net.SplitHostPort(hp)
		if err != nil {
			// No port: the whole string is the host.
			host, portStr = strings.Trim(hp, "[]"), strconv.Itoa(defaultAerospikePort)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port <= 0 || port > 65535 || host == "" {
			return nil, "", fmt.Errorf("bad host %q", hp)
		}
		hosts = append(hosts, as.NewHost(host, port))
	}
	return hosts, ns, nil
}

func openAerospike(ctx context.Context, seeds []*as.Host, namespace string, o Options) (*aerospikeStore, error) {
	log := o.logger().With("component", "profiles", "backend", "aerospike")
	cp := as.NewClientPolicy()
	cp.Timeout = o.AerospikeConnectTimeout
	if cp.Timeout <= 0 {
		cp.Timeout = defaultAerospikeConnTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		cp.Timeout = min(cp.Timeout, time.Until(dl))
	}
	cp.ConnectionQueueSize = o.AerospikeConnectionsPerNode
	if cp.ConnectionQueueSize <= 0 {
		cp.ConnectionQueueSize = defaultAerospikeConns
	}
	client, err := as.NewClientWithPolicyAndHost(cp, seeds...)
	if err != nil {
		return nil, fmt.Errorf("profiles: connect to aerospike %v: %w", seeds, err)
	}
	timeout := o.AerospikeTimeout
	if timeout <= 0 {
		timeout = defaultAerospikeTimeout
	}
	s := &aerospikeStore{
		client:    client,
		namespace: namespace,
		log:       log,
		timeout:   timeout,
		mapPolicy: as.NewMapPolicyWithFlags(as.MapOrder.KEY_ORDERED, as.MapWriteFlagsDefault),
	}
	s.write = *as.NewWritePolicy(0, 0)
	s.write.CommitLevel = as.COMMIT_ALL // acknowledged = on master and replica
	s.write.RecordExistsAction = as.UPDATE
	s.write.Expiration = as.TTLServerDefault
	s.read = *as.NewWritePolicy(0, 0)
	for _, p := range []*as.WritePolicy{&s.write, &s.read} {
		p.TotalTimeout = timeout
		p.SocketTimeout = timeout / 2
		p.MaxRetries = 2
		p.SleepBetweenRetries = 5 * time.Millisecond
	}
	log.Info("profile store open", "seeds", fmt.Sprint(seeds), "namespace", namespace, "set", aerospikeSet, "timeout", timeout)
	return s, nil
}

// keyBusyBackoff is the pause before retrying a KEY_BUSY answer.
const keyBusyBackoff = 2 * time.Millisecond

// operate runs one Operate within the store's time budget (or the
// context's deadline, when sooner). The server answers KEY_BUSY when too
// many transactions queue on one record (a hot cookie; the namespace's
// transaction-pending-limit); the client does not retry that, so operate
// does, after a short pause, until the budget is spent. Retrying is safe:
// every operation this package sends is idempotent.
func (s *aerospikeStore) operate(ctx context.Context, tmpl *as.WritePolicy, key *as.Key, ops ...*as.Operation) (*as.Record, error) {
	deadline := time.Now().Add(s.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, context.DeadlineExceeded
		}
		p := *tmpl
		p.TotalTimeout = left
		p.SocketTimeout = min(p.SocketTimeout, left)
		rec, err := s.client.Operate(&p, key, ops...)
		if err == nil {
			return rec, nil
		}
		if err.Matches(types.PARAMETER_ERROR, types.RECORD_TOO_BIG) {
			return nil, fmt.Errorf("%w: %w", ErrData, err)
		}
		if !err.Matches(types.KEY_BUSY) || time.Until(deadline) <= keyBusyBackoff {
			return nil, err
		}
		time.Sleep(keyBusyBackoff)
	}
}

// Append implements Store.
func (s *aerospikeStore) Append(ctx context.Context, t *schemas.UserTag, tagJSON []byte) error {
	key, aerr := as.NewKey(s.namespace, aerospikeSet, t.Cookie)
	if aerr != nil {
		return fmt.Errorf("profiles: append: key of cookie %q: %w", t.Cookie, aerr)
	}
	id := appendEntryID(make([]byte, 0, entryIDLen), t.TimeMs, xxhash.Sum64(tagJSON))
	bin := binNames[t.Action]
	_, err := s.operate(ctx, &s.write, key,
		as.MapPutOp(s.mapPolicy, bin, id, tagJSON),
		as.MapRemoveByIndexRangeOp(bin, Keep, as.MapReturnType.NONE),
	)
	if err != nil {
		return fmt.Errorf("profiles: append tag of cookie %q to aerospike: %w", t.Cookie, err)
	}
	return nil
}

// Read implements Store.
func (s *aerospikeStore) Read(ctx context.Context, cookie string, r schemas.TimeRange, limit int) (Profile, error) {
	if err := ctx.Err(); err != nil {
		return Profile{}, fmt.Errorf("profiles: read: %w", err)
	}
	limit = min(limit, Keep)
	start, end, ok := idRange(r)
	if !ok || limit <= 0 {
		return Profile{}, nil
	}
	key, aerr := as.NewKey(s.namespace, aerospikeSet, cookie)
	if aerr != nil {
		return Profile{}, fmt.Errorf("profiles: read: key of cookie %q: %w", cookie, aerr)
	}
	var endKey any // an untyped nil means "to the end of the map"
	if end != nil {
		endKey = end
	}
	ops := make([]*as.Operation, 0, 2*schemas.NumActions)
	for _, bin := range binNames {
		ops = append(ops,
			as.MapGetByKeyRangeOp(bin, start, endKey, as.MapReturnType.COUNT),
			as.MapGetByKeyRelativeIndexRangeCountOp(bin, start, 0, limit, as.MapReturnType.VALUE),
		)
	}
	rec, err := s.operate(ctx, &s.read, key, ops...)
	if err != nil {
		var ae as.Error
		if errors.As(err, &ae) && ae.Matches(types.KEY_NOT_FOUND_ERROR) {
			return Profile{}, nil
		}
		return Profile{}, fmt.Errorf("profiles: read cookie %q from aerospike: %w", cookie, err)
	}
	var out [schemas.NumActions][][]byte
	for a, bin := range binNames {
		if out[a], err = binValues(rec.Bins[bin], limit); err != nil {
			return Profile{}, fmt.Errorf("profiles: read cookie %q: bin %q: %w", cookie, bin, err)
		}
	}
	return Profile{Views: out[schemas.View], Buys: out[schemas.Buy]}, nil
}

// binValues decodes the two results of one bin in Read: the count of ids
// in the range and the values from the range's newest end. A bin that does
// not exist yields nil results.
func binValues(res any, limit int) ([][]byte, error) {
	if res == nil {
		return nil, nil
	}
	pair, ok := res.([]any)
	if !ok || len(pair) != 2 {
		return nil, fmt.Errorf("want [count, values], got %T", res)
	}
	var count int
	switch c := pair[0].(type) {
	case nil:
	case int:
		count = c
	case int64:
		count = int(c)
	default:
		return nil, fmt.Errorf("count: unexpected %T", pair[0])
	}
	if pair[1] == nil || count <= 0 {
		return nil, nil
	}
	vals, ok := pair[1].([]any)
	if !ok {
		return nil, fmt.Errorf("values: unexpected %T", pair[1])
	}
	n := min(count, limit, len(vals))
	if n == 0 {
		return nil, nil
	}
	out := make([][]byte, n)
	for i := range out {
		b, ok := vals[i].([]byte)
		if !ok {
			return nil, fmt.Errorf("value %d: unexpected %T", i, vals[i])
		}
		out[i] = b // the client decodes each blob into its own fresh slice
	}
	return out, nil
}

// Ping implements Store: the client must see the cluster, and a seed
// node must answer an info request.
func (s *aerospikeStore) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("profiles: ping: %w", err)
	}
	if !s.client.IsConnected() {
		return errors.New("profiles: ping: aerospike client not connected")
	}
	node, aerr := s.client.Cluster().GetRandomNode()
	if aerr != nil {
		return fmt.Errorf("profiles: ping: %w", aerr)
	}
	ip := as.NewInfoPolicy() // v7.10.2 dereferences a nil policy
	ip.Timeout = s.timeout
	if dl, ok := ctx.Deadline(); ok {
		ip.Timeout = min(ip.Timeout, time.Until(dl))
	}
	if _, aerr := node.RequestInfo(ip, "status"); aerr != nil {
		return fmt.Errorf("profiles: ping aerospike node %s: %w", node.GetName(), aerr)
	}
	return nil
}

// Close implements Store.
func (s *aerospikeStore) Close() error {
	s.client.Close()
	return nil
}
