#!/usr/bin/env bash
# Usage: stack/1-label-nodes.sh [--nodes FILE] [--dry-run]
#
# Step 1: put the allezon.* labels of the node map (default stack/nodes.conf)
# on the Swarm's nodes, and take away allezon.* labels the map does not
# give a node. Run it on a manager. Nodes are named by hostname, as in
# `docker node ls`; edit the map to yours first.
#   --nodes FILE  the node map to apply
#   --dry-run     print the docker commands instead of running them
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wants_help "$@"

nodes_file=$STACK_DIR/nodes.conf
dry=false
while (($#)); do
  case $1 in
    --nodes)
      nodes_file=${2:?--nodes needs a file}
      shift 2
      ;;
    --dry-run)
      dry=true
      shift
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ -r $nodes_file ]] || die "cannot read the node map $nodes_file"

run() {
  if $dry; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@" >/dev/null
  fi
}

$dry || need_manager
count=0
while read -r node labels; do
  [[ -z $node || $node == \#* ]] && continue
  count=$((count + 1))
  if ! $dry; then
    docker node inspect "$node" >/dev/null 2>&1 || die "node $node of $nodes_file is not in this swarm (docker node ls)"
  fi
  declare -A want=()
  for kv in $labels; do
    [[ $kv == allezon.*=* ]] || die "$nodes_file: node $node: $kv is not an allezon.<key>=<value> label"
    want[${kv%%=*}]=${kv#*=}
  done
  # Drop the allezon.* labels the map does not give this node.
  if ! $dry; then
    while read -r key; do
      [[ -n $key && -z ${want[$key]+x} ]] || continue
      info "$node: removing stale label $key"
      run docker node update --label-rm "$key" "$node"
    done < <(docker node inspect --format '{{range $k, $v := .Spec.Labels}}{{println $k}}{{end}}' "$node" | grep '^allezon\.' || true)
  fi
  args=()
  for key in "${!want[@]}"; do
    args+=(--label-add "$key=${want[$key]}")
  done
  info "$node: ${labels}"
  run docker node update "${args[@]}" "$node"
  unset want
done <"$nodes_file"
((count == 10)) || info "WARNING: $nodes_file names $count nodes; the stack files expect the ten-node layout"
$dry && info "dry run: nothing changed"
info "$count nodes in the map; check the labels with: docker node ls -q | xargs docker node inspect --format '{{.Description.Hostname}} {{.Spec.Labels}}'"
