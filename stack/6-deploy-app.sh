#!/usr/bin/env bash
# Usage: stack/6-deploy-app.sh [--timeout SECONDS]
#
# Step 6: deploy the stateless half (2.docker-compose.yaml) as the stack
# "allezon": gateway x2 on port 8088 of every node (routing mesh), pipeline
# x2, migrate (one-shot), Prometheus, Grafana on port 3000. Waits until
# every service is running and healthy. Re-run it to roll out a new release
# (step 2 first): gateways and workers update one at a time, the new task
# starting before the old one stops.
#   --timeout SECONDS  how long to wait (default 600)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wants_help "$@"

parse_timeout 600 "$@"
need_manager
load_release
need_secrets allezon_db_password allezon_grafana_admin_password
docker network inspect "$NETWORK" >/dev/null 2>&1 ||
  die "network $NETWORK is missing: deploy the stateful half first (stack/4-deploy-data.sh)"
for label in role=gateway role=pipeline monitoring=true; do
  [[ -n $(docker node ls -q --filter "node.label=allezon.$label") ]] ||
    die "no node carries the label allezon.$label: run stack/1-label-nodes.sh"
done
export_config_hashes
info "deploying $APP_STACK from 2.docker-compose.yaml"
(cd "$REPO_ROOT" && docker stack deploy --with-registry-auth --prune -c 2.docker-compose.yaml "$APP_STACK")
wait_stack "$APP_STACK" "$timeout" || die "the stateless half is not healthy"
info "deployed; next: stack/7-health.sh"
