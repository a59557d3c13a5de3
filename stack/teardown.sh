#!/usr/bin/env bash
# Usage: stack/teardown.sh [--secrets] [--yes]
#
# Remove the deployment: the stateless stack "allezon" first, then the
# stateful "allezon-data" (and with it the network), then the configs.
# Data volumes stay on their nodes, so a new deploy finds its data again;
# to delete the data for good, run on each data node the
# `docker volume rm` commands this script prints.
#   --secrets  also remove the Swarm secrets (the files in
#              ~/.allezon/secrets stay)
#   --yes      do not ask for confirmation
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wants_help "$@"

secrets=false yes=false
while (($#)); do
  case $1 in
    --secrets) secrets=true ;;
    --yes) yes=true ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
need_manager
if ! $yes; then
  read -r -p "Remove the stacks $APP_STACK and $DATA_STACK? [y/N] " answer
  [[ $answer == [yY]* ]] || die "not confirmed"
fi

# wait_gone waits until a stack's services and tasks are gone.
wait_gone() {
  local i
  for i in $(seq 1 60); do
    [[ -z $(stack_services "$1") ]] &&
      [[ -z $(docker ps -aq --filter "label=com.docker.stack.namespace=$1" 2>/dev/null) ]] && return 0
    sleep 2
  done
  info "WARNING: stack $1 still has services or containers after 2 minutes (i=$i)"
}

for stack in "$APP_STACK" "$DATA_STACK"; do
  if [[ -n $(stack_services "$stack") ]]; then
    info "removing stack $stack"
    docker stack rm "$stack" >/dev/null
    wait_gone "$stack"
  else
    info "stack $stack is not deployed"
  fi
done
docker service rm allezon-migrate-oneoff >/dev/null 2>&1 || true
for i in $(seq 1 30); do
  docker network inspect "$NETWORK" >/dev/null 2>&1 || break
  sleep 2
done
docker network inspect "$NETWORK" >/dev/null 2>&1 && info "WARNING: network $NETWORK still exists after ${i} tries"
mapfile -t configs < <(docker config ls --format '{{.Name}}' | grep '^allezon_' || true)
if ((${#configs[@]})); then
  docker config rm "${configs[@]}" >/dev/null
  info "removed ${#configs[@]} configs"
fi
if $secrets; then
  for s in "${SECRETS[@]}"; do
    docker secret rm "$s" >/dev/null 2>&1 && info "removed secret $s"
  done
fi
info "the data volumes stay on their nodes; to delete them, on each node:"
info "  docker volume ls -q --filter name=${DATA_STACK}_ | xargs -r docker volume rm"
info "  docker volume ls -q --filter name=${APP_STACK}_ | xargs -r docker volume rm"
