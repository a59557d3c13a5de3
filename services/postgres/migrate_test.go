package postgres

import (
	"context"
	"os"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/allezon/allezon/services/postgres/pgtest"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestLoadMigrations(t *testing.T) {
	sql := &fstest.MapFile{Data: []byte("SELECT 1;")}
	for _, tc := range []struct {
		name     string
		files    fstest.MapFS
		versions []int
		wantErr  bool
	}{
		{"ordered by version", fstest.MapFS{"migrations/0010_b.sql": sql, "migrations/0002_a.sql": sql}, []int{2, 10}, false},
		{"other files ignored", fstest.MapFS{"migrations/0001_a.sql": sql, "migrations/README.md": sql}, []int{1}, false},
		{"duplicate version", fstest.MapFS{"migrations/0001_a.sql": sql, "migrations/1_b.sql": sql}, nil, true},
		{"no number", fstest.MapFS{"migrations/init.sql": sql}, nil, true},
		{"no name", fstest.MapFS{"migrations/0001_.sql": sql}, nil, true},
		{"version zero", fstest.MapFS{"migrations/0000_a.sql": sql}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			migs, err := loadMigrations(tc.files)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			var got []int
			for _, m := range migs {
				got = append(got, m.version)
			}
			if len(got) != len(tc.versions) {
				t.Fatalf("versions %v, want %v", got, tc.versions)
			}
			for i := range got {
				if got[i] != tc.versions[i] {
					t.Fatalf("versions %v, want %v", got, tc.versions)
				}
			}
		})
	}
}

func TestEmbeddedMigrationsLoad(t *testing.T) {
	migs, err := loadMigrations(migrationFS)
	if err != nil || len(migs) == 0 {
		t.Fatalf("embedded migrations: %d, %v", len(migs), err)
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Start(t)
	for range 2 {
		if err := Migrate(ctx, dsn); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
	}
	checkSchema(t, dsn)
}

func TestMigrateConcurrently(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Start(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = Migrate(ctx, dsn) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Migrate #%d: %v", i, err)
		}
	}
	checkSchema(t, dsn)
}

// checkSchema checks every migration is recorded once and the tables exist.
func checkSchema(t *testing.T, dsn string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	migs, _ := loadMigrations(migrationFS)
	var recorded int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&recorded); err != nil {
		t.Fatalf("schema_migrations: %v", err)
	}
	if recorded != len(migs) {
		t.Fatalf("schema_migrations has %d rows, want %d", recorded, len(migs))
	}
	for _, table := range []string{"agg_total", "agg_origin", "agg_brand", "agg_category", "agg_brand_category", "agg_cell", "offsets"} {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s missing (%v)", table, err)
		}
	}
}
