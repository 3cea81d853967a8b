#!/usr/bin/env bash
# Build a local Debian bookworm base image (python3 + venv + CA certificates) with debootstrap and
# import it into podman, for machines that cannot pull images from a registry. Cached: does nothing
# when the image already exists (delete it with `podman rmi` to rebuild).
#
#   deploy/base-image.sh [IMAGE]        default IMAGE: localhost/switchboard-base:bookworm
#
# The Debian mirror is the one apt already uses on this machine (read from /etc/apt/sources.list*),
# or $DEBIAN_MIRROR when set.
set -euo pipefail

image="${1:-localhost/switchboard-base:bookworm}"
if podman image exists "$image"; then
    echo "base image $image: cached"
    exit 0
fi

mirror_from_apt() {
    # deb822 files (*.sources): the first URI of a stanza whose Suites list plain "bookworm"
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             { uris = ""; ok = 0
               for (i = 1; i <= NF; i++) {
                 if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); uris = $i }
                 if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) ok = 1
               }
               if (ok && uris != "") { split(uris, u, /[ \t]+/); print u[1] } }' "$f"
    done
    # one-line format: deb [options] URI bookworm component...
    local lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    for f in "${lists[@]}"; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) while ($i !~ /\]$/) i++; if ($i ~ /\]$/ && $2 ~ /^\[/) i++
                           if ($(i + 1) == "bookworm") print $i }' "$f"
    done
}

mirror="${DEBIAN_MIRROR:-$(mirror_from_apt | head -n1 || true)}"
if [ -z "$mirror" ]; then
    echo "no Debian bookworm mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2
    exit 1
fi

root="$(mktemp -d /var/tmp/switchboard-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm from $mirror into $root (a few minutes, once)"
start=$(date +%s)
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" \
    > "$root.log" 2>&1 || { tail -n 40 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# A smaller image: no apt lists, caches, docs or man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$image" > /dev/null
echo "base image $image built in $(( $(date +%s) - start )) s"
