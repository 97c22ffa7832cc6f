# shellcheck shell=bash
# Helpers shared by the benchmark scripts (sourced, not run). The caller defines log() and sets
# FFMPEG, BENCH_CACHE, CLK_TCK, WORK and OUT. deployments/bench/roles.sh keeps its own copies
# for now; bench_input builds exactly its ffmpeg arguments, so the scripts share one input
# cache.

# find_minio: the MinIO binary ($MINIO, on PATH, or in GOBIN).
find_minio() {
  if [ -n "${MINIO:-}" ]; then echo "$MINIO"; return; fi
  if command -v minio >/dev/null; then command -v minio; return; fi
  local gobin; gobin=$(go env GOBIN); [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
  if [ -x "$gobin/minio" ]; then echo "$gobin/minio"; return; fi
  log "no minio binary (scripts/deps.sh --with-minio, or go tool -modfile=tools/go.mod task deps:test, installs it)"; exit 1
}

# stop_at_exit: from here on, every process in PIDS is stopped (stop_tree, newest first) when the
# script exits or is interrupted, and the work dir is removed (but OUT, if it is inside it;
# KEEP=1 keeps everything).
stop_at_exit() {
  PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  local rc=$? i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_tree "${PIDS[$i]}"; done
  if [ "${KEEP:-0}" != 1 ]; then
    case "$OUT" in
      "$WORK"/*) find "$WORK" -mindepth 1 -maxdepth 1 ! -path "$OUT" -exec rm -rf {} + ;;
      *) rm -rf "$WORK" ;;
    esac
  fi
  exit $rc
}

# cpu_ticks PID: utime stime cutime cstime of a running process, in clock ticks ("comm" may hold
# spaces, so fields are counted after its closing parenthesis).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13, $14, $15}'; }

# bench_input STEM HEIGHT BITRATE SECONDS: path of a cached FLV of SECONDS s, HEIGHTp (16:9) at
# 30 fps, H.264 High with 2 s GOPs, B-frames and BITRATE (e.g. 6M) video, AAC 128k 48 kHz stereo,
# from ffmpeg's testsrc2 and a sine; generated once. The file is
# $BENCH_CACHE/STEM-SECONDSs-KEY.flv, KEY a hash of the ffmpeg version and arguments: with
# STEM spine-1080p30-high-6M-aac it is spine.sh's input, with roles-720p30-3M-aac roles.sh's.
bench_input() {
  local stem=$1 h=$2 b=$3 secs=$4 key f
  local args=(-hide_banner -loglevel error -nostdin -y
    -f lavfi -i "testsrc2=size=$((h * 16 / 9))x$h:rate=30"
    -f lavfi -i "sine=frequency=440:sample_rate=48000"
    -t "$secs"
    -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p
    -b:v "$b" -maxrate "$b" -bufsize "$((2 * ${b%M}))M" -g 60 -keyint_min 60 -sc_threshold 0 -bf 2
    -c:a aac -b:a 128k -ar 48000 -ac 2)
  key=$(printf '%s\n' "$("$FFMPEG" -version | head -1)" "${args[@]}" | sha256sum | cut -c1-12)
  f=$BENCH_CACHE/$stem-${secs}s-$key.flv
  if [ ! -s "$f" ]; then
    log "generating $f (once; cached)"
    "$FFMPEG" "${args[@]}" -f flv "$f.tmp.$$" && mv "$f.tmp.$$" "$f"
  fi
  echo "$f"
}

# video_bitrate FILE: video bits/s of a file, from its packets.
video_bitrate() {
  local bytes dur
  bytes=$("$FFPROBE" -v error -select_streams v:0 -show_entries packet=size -of csv=p=0 "$1" | awk '{s += $1} END {print s}')
  dur=$("$FFPROBE" -v error -show_entries format=duration -of csv=p=0 "$1")
  awk -v b="$bytes" -v d="$dur" 'BEGIN {printf "%d", b * 8 / d}'
}

# need_root CMD...: runs CMD as root (sudo when not root).
need_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

# descendants PID: every descendant of PID, parents before children.
descendants() {
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$c"
    descendants "$c"
  done
}

# stop_tree PID: SIGTERM to PID, then SIGKILL to it and to every descendant still there
# (servers leave children behind: nginx-rtmp's exec'd ffmpeg outlives a killed worker).
stop_tree() {
  local pid=$1 i kids
  kill -0 "$pid" 2>/dev/null || return 0
  kids=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for i in $kids; do kill -KILL "$i" 2>/dev/null || true; done
}

# wait_http URL SECONDS: until URL answers 2xx.
wait_http() {
  local i
  for i in $(seq $(($2 * 10))); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 not ready after $2 s" >&2
  return 1
}

# busy_ticks: CPU ticks the whole machine spent busy (user nice system irq softirq steal).
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# quiet_wait: wait (up to QUIET_MAX s, default 600) until the machine was less than QUIET_CORES
# (default 0.2) cores busy over 5 s; proceeds with a warning if it never gets quiet.
quiet_wait() {
  local max=${QUIET_MAX:-600} limit=${QUIET_CORES:-0.2} waited=0 b0 b1 cores
  [ "$max" -gt 0 ] || return 0
  while :; do
    b0=$(busy_ticks); sleep 5; b1=$(busy_ticks)
    cores=$(awk -v d=$((b1 - b0)) -v t="$CLK_TCK" 'BEGIN {printf "%.2f", d / t / 5}')
    if awk -v c="$cores" -v l="$limit" 'BEGIN {exit !(c < l)}'; then
      [ $waited -eq 0 ] || log "machine quiet after ${waited} s (${cores} cores busy)"
      return 0
    fi
    if [ $waited -ge "$max" ]; then
      log "WARNING: machine still ${cores} cores busy after ${waited} s; measuring anyway"
      return 0
    fi
    [ $waited -gt 0 ] || log "waiting for the machine to be quiet (${cores} cores busy; QUIET_MAX=${max} s)"
    waited=$((waited + 5))
  done
}

# The scripts keep the background processes they started in PIDS (their cleanup stops them).
# supervise CMD...: runs CMD in the background and waits, so a signal is handled at once.
supervise() {
  "$@" &
  local pid=$! rc=0
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  unset 'PIDS[${#PIDS[@]}-1]'
  return $rc
}

# forget PID: drops a stopped process from PIDS.
forget() {
  local i
  for i in "${!PIDS[@]}"; do [ "${PIDS[$i]}" != "$1" ] || unset 'PIDS[i]'; done
  PIDS=("${PIDS[@]}")
}
