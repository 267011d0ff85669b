#!/usr/bin/env bash
# Debian 12 system packages vidwatch needs beside its Python wheels: the GStreamer RTSP server
# (tests start a real one), FFmpeg (event clips at run time), Prometheus and mosquitto (tests run
# them on loopback), Chromium (the events page is tested in it, headless, through Playwright),
# podman/buildah/mmdebstrap (`make image` and its test build and run the container image) and
# systemd (systemd-analyze checks deploy/systemd/vidwatch.service),
# openssl (tests make a self-signed certificate for the metrics endpoint's TLS).
#
# Idempotent: exits at once when every package is already installed. Safe to run as root in CI
# (uses sudo only when not root). Package daemons are never started by the install: tests start
# prometheus/mosquitto themselves on loopback ports of their own.
#
# Usage: deploy/install-system-deps.sh [--dry-run]
set -euo pipefail

PACKAGES=(
  gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-rtsp
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  python3-gi
  prometheus
  mosquitto
  ffmpeg
  chromium
  podman
  buildah
  mmdebstrap
  uidmap
  systemd
  openssl
)
# Daemons the Debian packages enable; stopped/disabled after install where an init system runs them.
DAEMONS=(prometheus prometheus-node-exporter mosquitto)

DRY_RUN=0
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null || { log "not root and no sudo: run as root"; exit 1; }
  SUDO=(sudo)
fi

missing_packages() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || echo "$pkg"
  done
}

# Print the given packages apt knows a candidate for; log the others.
available_packages() {
  local pkg candidate
  for pkg in "$@"; do
    candidate="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -n "$candidate" && "$candidate" != "(none)" ]]; then
      echo "$pkg"
    else
      log "UNAVAILABLE: $pkg has no installation candidate; skipped"
    fi
  done
}

# Without an init system, a package's postinst would try (and fail) to start its daemon; a
# policy-rc.d that answers 101 tells invoke-rc.d "not allowed" so the install succeeds quietly.
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
block_daemon_start() {
  [[ -e "$POLICY" ]] && return 0
  printf '#!/bin/sh\n# installed by vidwatch install-system-deps.sh during apt-get install\nexit 101\n' \
    | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  OWN_POLICY=1
}
restore_policy() {
  [[ "$OWN_POLICY" -eq 1 ]] && "${SUDO[@]}" rm -f "$POLICY"
  return 0
}

# Where systemd does run (a developer machine), keep the packaged daemons off: tests bind their
# own ports and a system prometheus on :9090 / mosquitto on :1883 would be in the way.
stop_daemons() {
  [[ -d /run/systemd/system ]] || return 0
  local unit
  for unit in "${DAEMONS[@]}"; do
    "${SUDO[@]}" systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
}

main() {
  local missing
  mapfile -t missing < <(missing_packages)
  if [[ "${#missing[@]}" -eq 0 ]]; then
    log "all ${#PACKAGES[@]} packages already installed"
    return 0
  fi
  log "missing: ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  local install
  mapfile -t install < <(available_packages "${missing[@]}")
  [[ "${#install[@]}" -eq 0 ]] && { log "nothing installable"; return 0; }
  if [[ "$DRY_RUN" -eq 1 ]]; then
    log "would install: ${install[*]}"
    return 0
  fi
  trap restore_policy EXIT
  block_daemon_start
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${install[@]}"
  stop_daemons
  log "installed: ${install[*]}"
}

main
