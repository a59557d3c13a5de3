#!/usr/bin/env bash
# Usage: stack/3-secrets.sh [--dir DIR]
#
# Step 3: create the Swarm secrets the stacks use, each from a file of the
# same name in DIR (default ~/.allezon/secrets, or ALLEZON_SECRETS_DIR):
#   allezon_db_password              the application role "allezon"
#   allezon_pg_superuser_password    PostgreSQL's superuser "postgres"
#   allezon_pg_replication_password  the replication role
#   allezon_grafana_admin_password   Grafana's "admin"
# A missing file is generated (random, mode 600). Keep DIR: Swarm never
# shows a secret again, and backup.sh / restore.sh read the database
# password from there. An existing Swarm secret is left as it is (rotating
# one means creating a new secret and redeploying).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wants_help "$@"

while (($#)); do
  case $1 in
    --dir)
      SECRETS_DIR=${2:?--dir needs a folder}
      shift 2
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
need_manager
need_cmd head base64 tr
umask 077
mkdir -p "$SECRETS_DIR"
for s in "${SECRETS[@]}"; do
  f=$SECRETS_DIR/$s
  if [[ ! -s $f ]]; then
    # 32 random characters from [A-Za-z0-9]: safe in any DSN or config.
    head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$f"
    info "generated $f"
  fi
  if docker secret inspect "$s" >/dev/null 2>&1; then
    info "secret $s exists; left as it is"
  else
    docker secret create "$s" "$f" >/dev/null
    info "created secret $s from $f"
  fi
done
