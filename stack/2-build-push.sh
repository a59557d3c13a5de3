#!/usr/bin/env bash
# Usage: stack/2-build-push.sh REGISTRY [TAG] [--debug]
#
# Step 2: build the allezon image (static binary, non-root) and the Patroni
# image, push both to REGISTRY (host[:port][/path], e.g. registry.lan:5000),
# and record the release in ~/.allezon/release for the scripts that follow.
#   TAG      image tag (default: git describe of this checkout)
#   --debug  build allezon with -tags querydebug (compares every query with
#            the expected answer in its body; see docs/api.md "Debug builds")
# Needs docker with BuildKit on this machine and push access to REGISTRY
# (docker login REGISTRY first if it asks for credentials). Every Swarm node
# must be able to pull from REGISTRY.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wants_help "$@"

registry="" tag="" debug=false
while (($#)); do
  case $1 in
    --debug) debug=true ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
      if [[ -z $registry ]]; then
        registry=$1
      elif [[ -z $tag ]]; then
        tag=$1
      else
        die "too many arguments (see --help)"
      fi
      ;;
  esac
  shift
done
[[ -n $registry ]] || die "give the registry to push to, e.g. stack/2-build-push.sh registry.lan:5000 (see --help)"
registry=${registry%/}
need_cmd docker git
if [[ -z $tag ]]; then
  tag=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null) || die "no TAG given and git describe failed"
fi
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid image tag '$tag'"
[[ $tag != latest ]] || die "the tag must name a version, not 'latest'"

tags=()
$debug && tags=(--build-arg TAGS=querydebug)
info "building $registry/allezon:$tag$($debug && echo ' (querydebug)')"
DOCKER_BUILDKIT=1 docker build --build-arg "VERSION=$tag" "${tags[@]}" -t "$registry/allezon:$tag" "$REPO_ROOT"
info "building $registry/allezon-patroni:$tag"
DOCKER_BUILDKIT=1 docker build -t "$registry/allezon-patroni:$tag" "$REPO_ROOT/services/patroni"
for image in allezon allezon-patroni; do
  info "pushing $registry/$image:$tag"
  docker push "$registry/$image:$tag"
done
save_release "$registry" "$tag"
info "release recorded in $RELEASE_FILE: ALLEZON_REGISTRY=$registry ALLEZON_VERSION=$tag"
