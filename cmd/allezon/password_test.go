package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// The password of a Swarm secret is spliced into the DSN so that pgx reads
// it back exactly, whatever characters it holds.
func TestWithPasswordFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, dsn, file, want string }{
		{"plain", "postgres://allezon@haproxy:5000/allezon?sslmode=disable", "s3cret\n", "s3cret"},
		{"special characters", "postgres://allezon@haproxy:5000/allezon", "p@ss:w/o%rd #?&=\r\n", "p@ss:w/o%rd #?&="},
		{"replaces a password", "postgresql://allezon:old@h:5432/db", "new", "new"},
		{"first line only", "postgres://allezon@h/db", "first\nsecond\n", "first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(f, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			dsn, err := withPasswordFile(tc.dsn, f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := pgconn.ParseConfig(dsn)
			if err != nil {
				t.Fatalf("pgx cannot parse the result: %v", err)
			}
			if cfg.Password != tc.want || cfg.User != "allezon" {
				t.Errorf("user %q password %q, want allezon %q", cfg.User, cfg.Password, tc.want)
			}
			if !strings.Contains(tc.dsn, "sslmode") {
				return
			}
			if cfg.TLSConfig != nil {
				t.Errorf("query parameters lost: TLS configured")
			}
		})
	}
}

func TestWithPasswordFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	good := filepath.Join(dir, "good")
	os.WriteFile(empty, []byte("\n"), 0o600)
	os.WriteFile(good, []byte("topsecret"), 0o600)
	for _, tc := range []struct{ name, dsn, file, want string }{
		{"missing file", "postgres://allezon@h/db", filepath.Join(dir, "nope"), "no such file"},
		{"empty password", "postgres://allezon@h/db", empty, "empty password"},
		{"pebble store", "pebble:///data/aggregates", good, "needs a postgres://"},
		{"no user", "postgres://h/db", good, "names no user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := withPasswordFile(tc.dsn, tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "topsecret") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

// The flag and its environment variable reach the migrate command.
func TestMigratePasswordFileFlag(t *testing.T) {
	t.Setenv("ALLEZON_AGGREGATES_PASSWORD_FILE", filepath.Join(t.TempDir(), "absent"))
	err := runMigrate(t.Context(), []string{"--aggregates", "postgres://allezon@127.0.0.1:1/allezon"})
	if err == nil || !strings.Contains(err.Error(), "aggregates-password-file") {
		t.Fatalf("migrate with an absent password file: %v", err)
	}
}
