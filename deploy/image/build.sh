#!/usr/bin/env bash
# `make image`: build the vidwatch image (deploy/Dockerfile) with podman.
#
# The base image is BASE_IMAGE when set; otherwise the public default of the Dockerfile when it
# can be pulled; otherwise (no registry reachable, as in CI) a Debian 12 base made here with
# mmdebstrap from the Debian mirror apt uses, cached as build/image/base-rootfs.tar so reruns
# skip it. Needs root (or a rootless podman setup) and: podman buildah mmdebstrap
# (deploy/install-image-deps.sh installs them).
#
# Env: IMAGE (tag, default localhost/vidwatch:latest), BASE_IMAGE, VIDWATCH_LOCAL_BASE=1 (skip
# the pull and use the mmdebstrap base), DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE="${IMAGE:-localhost/vidwatch:latest}"
PUBLIC_BASE="docker.io/library/python:3.11-slim-bookworm"
# What the local base carries: the runtime stage then needs no apt at build time. The tarball and
# the image are named after this list, so changing it makes a new base.
BASE_PACKAGES="python3,python3-venv,ca-certificates,libglib2.0-0,ffmpeg"
BASE_ID="$(printf '%s norecommends' "$BASE_PACKAGES" | sha256sum | cut -c1-8)"
LOCAL_BASE="localhost/vidwatch-base:bookworm-$BASE_ID"
CACHE=build/image
TARBALL="$CACHE/base-rootfs-$BASE_ID.tar"
log() { printf 'image: %s\n' "$*" >&2; }

[[ -f build/models/fight/manifest.json ]] || { log "build/models is missing: run 'make models' first"; exit 2; }

debian_mirror() {
  # The mirror this host's apt uses (deb822 or one-line sources), else deb.debian.org.
  local uri
  uri="$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
         | grep -v security | head -1 | awk '{print $2}')" || true
  echo "${DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

local_base() {
  if ! podman image exists "$LOCAL_BASE"; then
    if [[ ! -f "$TARBALL" ]]; then
      mkdir -p "$CACHE"
      rm -f "$CACHE"/base-rootfs-*.tar  # superseded package lists
      log "making a Debian 12 base with mmdebstrap ($(debian_mirror)): $BASE_PACKAGES"
      # --format=tar: never a directory (a killed directory build leaves /proc, /sys mounted in it).
      # No Recommends. Debian's FFmpeg still Depends on Mesa and LLVM (through libavfilter and
      # libavdevice): the base is ~700 MB with it, 229 MB without.
      mmdebstrap --quiet --variant=minbase --format=tar --include="$BASE_PACKAGES" \
        --aptopt='APT::Install-Recommends "false"' \
        bookworm "$CACHE/base-rootfs.partial.tar" "$(debian_mirror)"
      mv "$CACHE/base-rootfs.partial.tar" "$TARBALL"
    fi
    podman import --quiet "$TARBALL" "$LOCAL_BASE" >/dev/null
  fi
  echo "$LOCAL_BASE"
}

if [[ -z "${BASE_IMAGE:-}" ]]; then
  if [[ "${VIDWATCH_LOCAL_BASE:-0}" != 1 ]] && { podman image exists "$PUBLIC_BASE" \
       || timeout 60 podman pull --quiet "$PUBLIC_BASE" >/dev/null 2>&1; }; then
    BASE_IMAGE="$PUBLIC_BASE"
  else
    log "$PUBLIC_BASE cannot be pulled here; using a local Debian base"
    BASE_IMAGE="$(local_base)"
  fi
fi

MOUNTS=()
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  # The host's CA bundle at a path of its own (never over the image's /etc/ssl: dpkg would fail).
  [[ -f "$bundle" ]] && { MOUNTS=(-v "$bundle:/run/host-ca.crt:ro"); break; }
done

log "building $IMAGE on $BASE_IMAGE"
BUILD=(podman build --isolation=chroot --format docker -f deploy/Dockerfile --build-arg "BASE_IMAGE=$BASE_IMAGE"
       "${MOUNTS[@]}")
# The builder stage gets a tag of its own so that its layers (the dependency install) stay as
# the cache for the next build while superseded vidwatch images are pruned below.
"${BUILD[@]}" --target builder -t "${IMAGE%:*}-builder:latest" .
"${BUILD[@]}" -t "$IMAGE" .
# Untagged images left by earlier builds of this Dockerfile only (label), never anyone else's.
podman image prune -f --filter label=io.vidwatch.image >/dev/null || true
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"
