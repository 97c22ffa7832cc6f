#!/usr/bin/env bash
# Installs what gopcast's tests and demo need and a fresh Debian machine lacks: ffmpeg (Debian's
# package) and the MinIO server (built from source with go install, ~4 minutes, once).
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

need_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "deps: need root to run: $*" >&2; exit 1; fi
}

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "deps: installing ffmpeg from Debian's packages"
  need_root apt-get update -q
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q ffmpeg
fi

if [ "${1:-}" = "--with-minio" ]; then
  gobin="$(go env GOBIN)"; [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
  if ! command -v minio >/dev/null && [ ! -x "$gobin/minio" ]; then
    echo "deps: building the MinIO server (go install, about 4 minutes, once per machine)"
    go install "github.com/minio/minio@${MINIO_VERSION}"
  fi
fi
