// Package postgres holds Allezon's PostgreSQL schema, as numbered SQL
// migrations embedded in the binary, and applies them.
package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLock is the pg_advisory_xact_lock key that serialises migrating
// processes (the pipeline's replicas and `allezon migrate` may start at once).
const migrationLock = 0x616c6c657a6f6e // "allezon"

// migration is one schema step: migrations/NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// Migrate brings the database at dsn up to the newest schema. It is
// idempotent (applied versions are recorded in schema_migrations) and safe
// to run from several processes at once: each migration runs in its own
// transaction holding a transaction-scoped advisory lock, and re-checks under
// that lock whether another process applied it meanwhile.
func Migrate(ctx context.Context, dsn string) error {
	migs, err := loadMigrations(migrationFS)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Close(context.Background())
	for _, m := range migs {
		applied, err := apply(ctx, conn, m)
		if err != nil {
			return fmt.Errorf("migrate: %04d_%s: %w", m.version, m.name, err)
		}
		if applied {
			slog.Info("postgres migration applied", "version", m.version, "name", m.name)
		}
	}
	return nil
}

// apply runs m unless it is recorded as applied; it reports whether it ran.
func apply(ctx context.Context, conn *pgx.Conn, m migration) (bool, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrationLock)); err != nil {
		return false, fmt.Errorf("advisory lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return false, fmt.Errorf("create schema_migrations: %w", err)
	}
	var done bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", m.version).Scan(&done); err != nil {
		return false, fmt.Errorf("read schema_migrations: %w", err)
	}
	if done {
		return false, nil
	}
	// No arguments: pgx uses the simple protocol, which runs a file of
	// several statements in one round trip.
	if _, err := tx.Exec(ctx, m.sql); err != nil {
		return false, fmt.Errorf("run: %w", err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
		return false, fmt.Errorf("record: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	return true, nil
}

// loadMigrations reads migrations/NNNN_name.sql from fsys, ordered by
// version; versions must be positive and unique.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	files, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	migs := make([]migration, 0, len(files))
	for _, f := range files {
		base := strings.TrimSuffix(path.Base(f), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 || name == "" {
			return nil, fmt.Errorf("migrations: %s: want NNNN_name.sql", f)
		}
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
		migs = append(migs, migration{version: v, name: name, sql: string(b)})
	}
	slices.SortFunc(migs, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(migs); i++ {
		if migs[i].version == migs[i-1].version {
			return nil, fmt.Errorf("migrations: version %d used twice", migs[i].version)
		}
	}
	return migs, nil
}
