#!/usr/bin/env bash
# Install what the container tests need (Debian packages), once: a no-op when all are present.
set -euo pipefail
need=()
for tool in podman:podman buildah:buildah debootstrap:debootstrap runc:runc podman-compose:podman-compose \
            newuidmap:uidmap; do
    command -v "${tool%%:*}" > /dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "${tool%%:*}" > /dev/null 2>&1 \
        || need+=("${tool#*:}")
done
# Compose services find each other by name: with podman's CNI network backend (Debian bookworm's
# default) that needs the dnsname plugin, which apt does not bring with podman under --no-install-recommends.
[ -x /usr/lib/cni/dnsname ] || need+=(golang-github-containernetworking-plugin-dnsname)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${need[*]}: run  sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
