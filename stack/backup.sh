#!/usr/bin/env bash
# Usage: stack/backup.sh [--out DIR] [--only postgres|aerospike]
#
# Back up the running deployment into DIR (default ./allezon-backup-<UTC
# time>), on this machine:
#   aggregates.dump  pg_dump (custom format) of the database "allezon",
#                    read through HAProxy's read-write port, i.e. from the
#                    Patroni leader; it holds the pipeline's Kafka offsets
#                    in the same snapshot as the aggregates
#   profiles.asb     asbackup of the Aerospike namespace "allezon"
# Both run in one-off containers on the stack's network; the database
# password comes from ~/.allezon/secrets/allezon_db_password
# (ALLEZON_SECRETS_DIR). Needs the release (ALLEZON_REGISTRY/VERSION or
# ~/.allezon/release) for pg_dump 15 from the Patroni image.
# Restore with stack/restore.sh.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wants_help "$@"

out=allezon-backup-$(date -u +%Y%m%dT%H%M%SZ)
only=""
while (($#)); do
  case $1 in
    --out)
      out=${2:?--out needs a folder}
      shift 2
      ;;
    --only)
      only=${2:?--only needs postgres or aerospike}
      [[ $only == postgres || $only == aerospike ]] || die "--only takes postgres or aerospike"
      shift 2
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
need_manager
docker network inspect "$NETWORK" >/dev/null 2>&1 || die "network $NETWORK is missing: is the stack deployed?"
mkdir -p "$out"

if [[ $only != aerospike ]]; then
  load_release
  PGPASSWORD=$(secret_value allezon_db_password)
  export PGPASSWORD
  info "pg_dump of database allezon via haproxy:5000 (the leader) -> $out/aggregates.dump"
  one_off -e PGPASSWORD --entrypoint pg_dump "$ALLEZON_REGISTRY/allezon-patroni:$ALLEZON_VERSION" \
    --host haproxy --port 5000 --username allezon --dbname allezon \
    --format custom --compress 6 --no-owner >"$out/aggregates.dump.part" ||
    die "pg_dump failed"
  mv "$out/aggregates.dump.part" "$out/aggregates.dump"
  info "aggregates: $(du -h "$out/aggregates.dump" | cut -f1)"
fi

if [[ $only != postgres ]]; then
  info "asbackup of namespace allezon via aerospike1 -> $out/profiles.asb"
  one_off "$AEROSPIKE_TOOLS_IMAGE" asbackup --host aerospike1:3000 --namespace allezon \
    --output-file - >"$out/profiles.asb.part" ||
    die "asbackup failed"
  mv "$out/profiles.asb.part" "$out/profiles.asb"
  info "profiles: $(du -h "$out/profiles.asb" | cut -f1)"
fi
info "backup complete in $out"
