#!/usr/bin/env bash
# Build the Switchboard image with podman on a machine that pulls no images: the base is a local
# Debian bookworm image (deploy/base-image.sh, cached), pip reaches the package index over the host
# network and trusts the system CA bundle (a build secret, never a layer).
#
#   deploy/build-image.sh [TAG] [extra podman build options, e.g. --no-cache]
#
# With Docker and the official base, `docker build -t switchboard:latest .` is all it takes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/containers.conf}"
tag="${1:-localhost/switchboard:latest}"
shift || true
base="${SWITCHBOARD_BASE_IMAGE:-localhost/switchboard-base:bookworm}"
deploy/base-image.sh "$base"
ca="${SWITCHBOARD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
secret=()
[ -s "$ca" ] && secret=(--secret "id=ca,src=$ca")
podman build --network host "${secret[@]}" --build-arg "BASE_IMAGE=$base" --tag "$tag" "$@" .
