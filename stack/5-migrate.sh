#!/usr/bin/env bash
# Usage: stack/5-migrate.sh [--timeout SECONDS]
#
# Step 5: create or update the aggregates schema (`allezon migrate`,
# idempotent) through HAProxy's read-write port, as a one-off Swarm service
# on a pipeline node with the allezon_db_password secret. Prints its log;
# fails when the migration fails. (2.docker-compose.yaml also runs migrate
# on every deploy; this step makes the schema exist before the first one.)
#   --timeout SECONDS  how long the migration may take (default 300)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wants_help "$@"

parse_timeout 300 "$@"
need_manager
load_release
need_secrets allezon_db_password
name=allezon-migrate-oneoff
docker service rm "$name" >/dev/null 2>&1 || true
info "running allezon migrate ($ALLEZON_REGISTRY/allezon:$ALLEZON_VERSION)"
docker service create --detach --quiet --with-registry-auth --name "$name" \
  --network "$NETWORK" --restart-condition none \
  --constraint 'node.labels.allezon.role == pipeline' \
  --secret allezon_db_password \
  --env 'ALLEZON_AGGREGATES=postgres://allezon@haproxy:5000/allezon?sslmode=disable' \
  --env ALLEZON_AGGREGATES_PASSWORD_FILE=/run/secrets/allezon_db_password \
  "$ALLEZON_REGISTRY/allezon:$ALLEZON_VERSION" migrate >/dev/null
trap 'docker service rm "$name" >/dev/null 2>&1 || true' EXIT
start=$SECONDS
state=
while ((SECONDS - start < timeout)); do
  state=$(docker service ps --no-trunc --format '{{.CurrentState}} {{.Error}}' "$name" | head -n 1)
  case $state in Complete* | Failed* | Rejected*) break ;; esac
  sleep 3
done
docker service logs --raw "$name" 2>&1 | sed 's/^/  migrate: /' >&2 || true
case $state in
  Complete*) info "schema up to date; next: stack/6-deploy-app.sh" ;;
  *) die "migration did not complete: ${state:-no task} (is the stateful half healthy? stack/7-health.sh)" ;;
esac
