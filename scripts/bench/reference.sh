#!/usr/bin/env bash
# Reference setups for the benchmarks (issue 6): the same inputs, publisher and latency
# definition as scripts/bench/spine.sh, against nginx-rtmp (Debian's nginx with
# libnginx-mod-rtmp) on the same machine, so gopcast's figures can be read side by side with
# what a single-box nginx-rtmp does.
#
# Everything runs on 127.0.0.1 with free ports (loadgen ports) and is stopped at exit:
#   1. installs nginx and libnginx-mod-rtmp with apt-get when missing; builds ./cmd/loadgen;
#   2. generates once (cached, shared with spine.sh and roles.sh) a 1080p30 6 Mbit/s and a
#      720p30 3 Mbit/s H.264 High FLV (2 s GOP, B-frames) with AAC 128k;
#   3. "pass": nginx-rtmp, one worker, writes passthrough HLS (MPEG-TS, hls_fragment 2s,
#      hls_playlist_length 12s: 6 segments, as gopcast's window) to a local directory served by
#      the same nginx over HTTP; loadgen publishes 1 stream of the 1080p input in real time with
#      its Go RTMP publisher and polls the playlist every POLL;
#   4. "ladder": the same plus `exec` of one ffmpeg per published stream running gopcast's
#      default ladder (720p 3000k, 480p 1200k, 360p 700k) with the transcoder's exact encoder
#      arguments (loadgen ladder-args: preset, profile, GOP, rate control, -copyts), each rung
#      published back over RTMP to an nginx HLS application with the audio copied; the source
#      stays listed as passthrough HLS, as in gopcast's default profile;
#   5. "scale": N passthrough streams of the 720p input for N in STEPS, a fresh nginx for each
#      step, stopping after the first N with a lost segment, a segment listed more than LATE_S
#      after its media end, or a publisher error;
#   6. for every run: listing delay per rendition (loadgen: median, p95, p99; segments expected,
#      listed, lost), CPU of the nginx process tree (master + worker + exec'd ffmpeg:
#      utime+stime+cutime+cstime from /proc/PID/stat, read before publishing and after the last
#      segment is listed) per media second, and its RSS (sum of VmRSS, sampled every second:
#      idle before publishing, peak, and (peak - idle) per stream);
#   7. writes $OUT/results.json, one JSON per run, the logs and $OUT/summary.txt.
#
# The delay is the one spine.sh measures for gopcast: the time a segment is first seen listed in
# its media playlist minus the wall-clock instant the publisher's media clock reached the
# segment's end. nginx-rtmp writes MPEG-TS segments; loadgen reads each segment's first video
# DTS from its head (nginx adds 700 ms to the RTMP timestamps: --ts-offset), see cmd/loadgen.
#
# Usage: scripts/bench/reference.sh   (SECONDS_MEDIA=60 and STEPS up to 200: about 12 minutes
#                                      on an idle 2-core machine, plus input generation once)
# Environment:
#   SECONDS_MEDIA (60)  media published per stream; INPUT_SECONDS (SECONDS_MEDIA) length of the
#                       generated inputs (loadgen loops them)
#   PASS, LADDER, SCALE (1): set 0 to skip a scenario
#   STEPS ("1 10 20 25 50 100 200")  stream counts of the scale scenario
#   LATE_S (2)          a step fails when a segment's delay exceeds this
#   POLL (100ms), END_TIMEOUT (60s), SETTLE (10s)  loadgen's --poll, --end-timeout and --settle
#                       (nginx-rtmp writes no EXT-X-ENDLIST: loadgen stops waiting for the
#                       last segments after SETTLE without anything new)
#   STAGGER (0)         loadgen's --stagger between stream starts
#   WORKERS (1)         nginx worker_processes (nginx-rtmp's live streaming works within one
#                       worker unless rtmp_auto_push is on; one worker keeps every stream in it)
#   OUT                 results directory (default: a results/ dir in the temporary work dir, kept)
#   BENCH_CACHE         input cache (default ~/.cache/gopcast-bench)
#   QUIET_CORES, QUIET_MAX  wait before each run until the machine is this idle (0.2 cores over
#                       5 s), at most QUIET_MAX s (600; 0: do not wait)
#   BENCH_NICE          e.g. 10: run nginx and loadgen at that niceness
#   NGINX, RTMP_MODULE, FFMPEG, FFPROBE  binaries / module path; KEEP=1 keeps the work dir
set -euo pipefail

cd "$(dirname "$0")/../.."
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh

SECONDS_MEDIA=${SECONDS_MEDIA:-60}
INPUT_SECONDS=${INPUT_SECONDS:-$SECONDS_MEDIA}
PASS=${PASS:-1}
LADDER=${LADDER:-1}
SCALE=${SCALE:-1}
STEPS=${STEPS:-1 10 20 25 50 100 200}
LATE_S=${LATE_S:-2}
POLL=${POLL:-100ms}
END_TIMEOUT=${END_TIMEOUT:-60s}
SETTLE=${SETTLE:-10s}
STAGGER=${STAGGER:-0}
WORKERS=${WORKERS:-1}
FFMPEG=${FFMPEG:-$(command -v ffmpeg || echo /usr/bin/ffmpeg)}
FFPROBE=${FFPROBE:-$(command -v ffprobe || echo /usr/bin/ffprobe)}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gopcast-bench}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gopcast-reference.XXXXXX")
OUT=${OUT:-$WORK/results}
CLK_TCK=$(getconf CLK_TCK)
NICE=()
[ -z "${BENCH_NICE:-}" ] || NICE=(nice -n "$BENCH_NICE")

log() { printf 'reference: %s\n' "$*" >&2; }

# --- everything started here is stopped at exit --------------------------------------------------
stop_at_exit


# --- 1. nginx-rtmp, loadgen ----------------------------------------------------------------------
find_rtmp_module() {
  local m
  for m in "${RTMP_MODULE:-}" /usr/lib/nginx/modules/ngx_rtmp_module.so /usr/share/nginx/modules/ngx_rtmp_module.so; do
    [ -n "$m" ] && [ -f "$m" ] && { echo "$m"; return 0; }
  done
  m=$(dpkg -L libnginx-mod-rtmp 2>/dev/null | grep '/ngx_rtmp_module\.so$' | head -1 || true)
  [ -n "$m" ] && [ -f "$m" ] && { echo "$m"; return 0; }
  return 1
}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
if [ ! -x "$NGINX" ] || ! find_rtmp_module >/dev/null; then
  log "installing nginx and libnginx-mod-rtmp from Debian's packages"
  need_root apt-get update -q
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx libnginx-mod-rtmp
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
RTMP_MOD=$(find_rtmp_module) || { log "no ngx_rtmp_module.so (set RTMP_MODULE)"; exit 1; }
for tool in "$NGINX" "$FFMPEG" "$FFPROBE" jq curl; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
RTMP_VERSION=$(dpkg-query -W -f '${Version}' libnginx-mod-rtmp 2>/dev/null || echo unknown)
mkdir -p "$OUT" "$BENCH_CACHE" "$WORK/bin"
log "building ./cmd/loadgen"
go build -o "$WORK/bin/loadgen" ./cmd/loadgen
LOADGEN=$WORK/bin/loadgen

# --- 2. inputs (cached) ----------------------------------------------------------------------------
IN1080=""
IN720=""
if [ "$PASS" = 1 ] || [ "$LADDER" = 1 ]; then IN1080=$(bench_input spine-1080p30-high-6M-aac 1080 6M "$INPUT_SECONDS"); fi
if [ "$SCALE" = 1 ]; then IN720=$(bench_input roles-720p30-3M-aac 720 3M "$INPUT_SECONDS"); fi

# --- nginx ---------------------------------------------------------------------------------------------
# start_nginx NAME MODE: writes $WORK/NAME/nginx.conf (MODE pass: application live with HLS in
# hls/; ladder: plus exec of ffmpeg and application rung with HLS in rung/, as nginx-rtmp wants
# one hls_path per application), starts nginx in the foreground (master +
# WORKERS workers) and sets NGX_PID, RTMP_PORT, HTTP_PORT, NGX_DIR.
start_nginx() {
  local name=$1 mode=$2 dir=$WORK/$1 user=""
  local ports
  mapfile -t ports < <("$LOADGEN" ports 2)
  RTMP_PORT=${ports[0]} HTTP_PORT=${ports[1]} NGX_DIR=$dir
  mkdir -p "$dir/hls" "$dir/rung" "$dir/logs"
  # Run as root, nginx would switch its workers to nobody, who cannot write into this
  # mktemp directory; keep them as root (loopback only). As another user, nginx ignores it.
  [ "$(id -u)" -ne 0 ] || user="user root root;"
  local exec_conf="" rung_app=""
  if [ "$mode" = ladder ]; then
    write_ladder "$dir"
    # wait_key: the exec'd ffmpeg starts on a keyframe; play_restart/publish_notify: it sees
    # the end of the stream when the publisher leaves and flushes its last segment;
    # exec_kill_signal term: nginx then asks it to stop rather than SIGKILL it.
    exec_conf="wait_key on; play_restart on; publish_notify on;
      exec $dir/ladder.sh \$name;
      exec_kill_signal term;"
    rung_app="application rung {
      live on;
      allow publish 127.0.0.1; deny publish all;
      hls on; hls_path $dir/rung; hls_fragment 2s; hls_playlist_length 12s;
    }"
  fi
  cat >"$dir/nginx.conf" <<EOF
load_module $RTMP_MOD;
$user
worker_processes $WORKERS;
worker_rlimit_nofile 16384;
error_log $dir/logs/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 8192; }
rtmp {
  server {
    listen 127.0.0.1:$RTMP_PORT;
    application live {
      live on;
      hls on; hls_path $dir/hls; hls_fragment 2s; hls_playlist_length 12s;
      $exec_conf
    }
    $rung_app
  }
}
http {
  access_log off;
  log_not_found off;
  sendfile on;
  keepalive_requests 1000000;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server {
    listen 127.0.0.1:$HTTP_PORT;
    location = /healthz { return 200 "ok\n"; }
    location /hls/ { alias $dir/hls/; add_header Cache-Control no-cache; }
    location /rung/ { alias $dir/rung/; add_header Cache-Control no-cache; }
  }
}
EOF
  "${NICE[@]}" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >"$dir/logs/stdout.log" 2>&1 &
  NGX_PID=$!
  PIDS+=("$NGX_PID")
  local i
  for i in $(seq 200); do
    curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" 2>/dev/null && return 0
    kill -0 "$NGX_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "$name: nginx did not start:"
  cat "$dir/logs/stdout.log" "$dir/logs/error.log" >&2 2>/dev/null || true
  exit 1
}


# stop_nginx NAME: stops it and keeps its logs.
stop_nginx() {
  stop_tree "$NGX_PID"
  forget "$NGX_PID"
  mkdir -p "$OUT/$1.logs"
  cp "$NGX_DIR"/nginx.conf "$NGX_DIR"/logs/* "$OUT/$1.logs/" 2>/dev/null || true
  [ ! -f "$NGX_DIR/ladder.sh" ] || cp "$NGX_DIR/ladder.sh" "$OUT/$1.logs/"
}

# write_ladder DIR: DIR/ladder.sh NAME runs one ffmpeg with the transcoder's ladder arguments for
# the 1080p input (loadgen ladder-args), reading rtmp .../live/NAME and publishing each rung to
# .../rung/NAME_RUNG with the audio copied. Sets RUNGS.
write_ladder() {
  local dir=$1 a j seen_i=0 outd=$1/ladder-out
  local args=() out=()
  mapfile -d '' args < <("$LOADGEN" ladder-args --input IN --out-dir "$outd" --profile default \
    --src-height "$SRC_HEIGHT" --src-bitrate "$SRC_VBITRATE" --fps 30)
  RUNGS=()
  for ((j = 0; j < ${#args[@]}; j++)); do
    a=${args[$j]}
    if [ $seen_i = 0 ]; then
      case "$a" in
        -f) j=$((j + 1)) ;; # -f mpegts of the chunk input: the input is RTMP here
        -i) out+=(-i "rtmp://127.0.0.1:$RTMP_PORT/live/@NAME@"); j=$((j + 1)); seen_i=1 ;;
        *) out+=("$a") ;;
      esac
      continue
    fi
    case "$a" in
      -an) out+=(-map 0:a -c:a copy) ;; # each nginx rung is muxed audio+video
      mpegts) out+=(flv) ;;             # the value of each output's -f
      "$outd"/*.ts)
        a=$(basename "$a" .ts)
        RUNGS+=("$a")
        out+=("rtmp://127.0.0.1:$RTMP_PORT/rung/@NAME@_$a")
        ;;
      *) out+=("$a") ;;
    esac
  done
  [ ${#RUNGS[@]} -gt 0 ] || { log "ladder-args gave no rung"; exit 1; }
  # shellcheck disable=SC2016 # "$1" is expanded by ladder.sh, not here
  {
    echo '#!/usr/bin/env bash'
    echo "# Run by nginx-rtmp's exec for each stream published to application live (\$1: its name)."
    printf 'exec %q' "$FFMPEG"
    printf ' %q' "${out[@]}"
    printf ' 2>>%q\n' "$dir/logs/ffmpeg-@NAME@.log"
  } | sed 's/@NAME@/"$1"/g' >"$dir/ladder.sh"
  chmod +x "$dir/ladder.sh"
}

# run_load NAME MODE INPUT STREAMS: starts nginx, publishes STREAMS streams of INPUT with
# loadgen, measures the nginx tree's CPU and RSS, stops nginx, writes $OUT/NAME.json.
run_load() {
  local name=$1 mode=$2 input=$3 streams=$4
  quiet_wait
  start_nginx "$name" "$mode"
  local base=http://127.0.0.1:$HTTP_PORT/hls
  local watch=(--playlist-url "source=$base/s{i}.m3u8")
  if [ "$mode" = ladder ]; then
    local r
    for r in "${RUNGS[@]}"; do watch+=(--playlist-url "$r=http://127.0.0.1:$HTTP_PORT/rung/s{i}_$r.m3u8"); done
  fi
  local idle before after b0 b1 rc=0 sampler
  idle=$("$LOADGEN" proctree --clk-tck "$CLK_TCK" "$NGX_PID")
  "$LOADGEN" proctree --clk-tck "$CLK_TCK" --every 1s --out "$OUT/$name.rss" "$NGX_PID" &
  sampler=$!
  PIDS+=("$sampler")
  before=$("$LOADGEN" proctree --clk-tck "$CLK_TCK" "$NGX_PID")
  b0=$(busy_ticks)
  log "$name: publishing ${SECONDS_MEDIA} s x $streams stream(s) of $(basename "$input") to nginx-rtmp (pid $NGX_PID, $mode)"
  supervise "${NICE[@]}" /usr/bin/time -f '%e %U %S' -o "$OUT/$name.loadgen.time" \
    "$LOADGEN" run --input "$input" --streams "$streams" --duration "${SECONDS_MEDIA}s" \
    --publish-url "rtmp://127.0.0.1:$RTMP_PORT/live/s{i}" "${watch[@]}" \
    --poll "$POLL" --end-timeout "$END_TIMEOUT" --settle "$SETTLE" --stagger "$STAGGER" \
    --json "$OUT/$name.loadgen.json" >"$OUT/$name.loadgen.txt" 2>"$OUT/$name.loadgen.err" || rc=$?
  after=$("$LOADGEN" proctree --clk-tck "$CLK_TCK" "$NGX_PID")
  b1=$(busy_ticks)
  stop_tree "$sampler"
  forget "$sampler"
  stop_nginx "$name"
  sed -n '/^ *rendition/,/^ *all /p' "$OUT/$name.loadgen.txt" >&2
  [ $rc -eq 0 ] || { log "$name: loadgen exited $rc:"; tail -5 "$OUT/$name.loadgen.err" >&2; }
  [ -s "$OUT/$name.loadgen.json" ] || { log "$name: no loadgen results"; return 1; }
  jq -n --arg name "$name" --arg mode "$mode" --arg input "$(basename "$input")" --argjson streams "$streams" \
    --argjson rc "$rc" --arg idle "$idle" --arg before "$before" --arg after "$after" \
    --argjson busy "$(awk -v d=$((b1 - b0)) -v t="$CLK_TCK" 'BEGIN {print d / t}')" \
    --rawfile rss "$OUT/$name.rss" --rawfile lt "$OUT/$name.loadgen.time" \
    --argjson late "$LATE_S" --slurpfile lg "$OUT/$name.loadgen.json" '
    def f(s): s | split(" ") | map(tonumber);
    def r3: . * 1000 | round / 1000;
    (f($idle)) as $i | (f($before)) as $b | (f($after)) as $a |
    ($lt | split("\n") | map(select(length > 0)) | last | split(" ") | map(tonumber)) as $t |
    ([$rss | split("\n")[] | select(length > 0) | split(" ")[2] | tonumber] + [$a[1]] | max) as $peak |
    ($lg[0]) as $l | ($l.media_seconds_per_stream * $l.streams) as $media |
    ($a[0] - $b[0]) as $cpu |
    {name: $name, server: "nginx-rtmp", mode: $mode, input: $input, streams: $streams, loadgen_exit: $rc,
     media_seconds: $media, wall_s: $t[0],
     nginx_cpu_s: ($cpu | r3), nginx_cpu_per_media_s: ($cpu / $media | r3),
     nginx_processes_at_end: $a[2],
     rss_idle_mb: ($i[1] / 1024 | r3), rss_peak_mb: ($peak / 1024 | r3),
     rss_per_stream_mb: (($peak - $i[1]) / 1024 / $streams | r3),
     loadgen_cpu_s: (($t[1] + $t[2]) | r3),
     others_cores: ((($busy - $cpu - $t[1] - $t[2]) / $t[0]) | r3),
     max_write_lag_ms: ([$l.per_stream[].publisher.max_write_lag_ms] | max | r3),
     errors: [$l.per_stream[] | select(.error != null) | "stream \(.index): \(.error)"],
     warnings: [$l.per_stream[] | select(.warning != null) | "stream \(.index): \(.warning)"],
     renditions: [($l.renditions + [$l.overall])[] | {name, expected: .segments_expected, listed: .segments_listed,
       lost, skipped: (.skipped_at_start // 0), median_s: (.delay_s.median | r3), p95_s: (.delay_s.p95 | r3),
       p99_s: (.delay_s.p99 | r3), max_s: (.delay_s.max | r3)}],
     timeline: $l.timeline_check,
     ok: ($rc == 0 and $l.overall.lost == 0 and $l.overall.delay_s.max <= $late and $l.overall.segments_listed > 0)}' \
    >"$OUT/$name.json"
  jq -r '"\(.name): nginx CPU \(.nginx_cpu_s) s for \(.media_seconds) media s = \(.nginx_cpu_per_media_s) CPU-s per media s; RSS idle \(.rss_idle_mb) MB, peak \(.rss_peak_mb) MB, (peak - idle) per stream \(.rss_per_stream_mb) MB; others used \(.others_cores) cores"' "$OUT/$name.json" >&2
}

if [ -n "$IN1080" ]; then
  SRC_HEIGHT=$("$FFPROBE" -v error -select_streams v:0 -show_entries stream=height -of csv=p=0 "$IN1080")
  SRC_VBITRATE=$(video_bitrate "$IN1080")
fi

# --- 3. passthrough, 1 x 1080p ---------------------------------------------------------------------
RUNS=()
if [ "$PASS" = 1 ]; then
  run_load pass pass "$IN1080" 1 && RUNS+=(pass)
fi

# --- 4. exec ffmpeg ladder, 1 x 1080p ------------------------------------------------------------------
if [ "$LADDER" = 1 ]; then
  run_load ladder ladder "$IN1080" 1 && RUNS+=(ladder)
fi

# --- 5. N x 720p passthrough, stepping N ---------------------------------------------------------------
SCALE_RUNS=()
if [ "$SCALE" = 1 ]; then
  for n in $STEPS; do
    run_load "scale-$n" pass "$IN720" "$n" || true
    [ -f "$OUT/scale-$n.json" ] || break
    SCALE_RUNS+=("scale-$n")
    if [ "$(jq .ok "$OUT/scale-$n.json")" != true ]; then
      log "scale: stopping at $n streams (a lost or late segment, or a publisher error)"
      break
    fi
  done
fi

# --- 6. results ----------------------------------------------------------------------------------------
files() { local r; for r in "$@"; do echo "$OUT/$r.json"; done; }
{
  echo '[]'
  # shellcheck disable=SC2046
  [ ${#RUNS[@]} -eq 0 ] || jq -s . $(files "${RUNS[@]}")
} | jq -s 'add' >"$OUT/runs.json"
{
  echo '[]'
  # shellcheck disable=SC2046
  [ ${#SCALE_RUNS[@]} -eq 0 ] || jq -s . $(files "${SCALE_RUNS[@]}")
} | jq -s 'add' >"$OUT/scale.json"
jq -n --arg when "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --arg machine "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  --arg nginx "$NGINX_VERSION" --arg rtmp "$RTMP_VERSION" \
  --arg ffmpeg "$("$FFMPEG" -version | head -1 | cut -d' ' -f1-3)" \
  --arg git "$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')" \
  --arg nice "${BENCH_NICE:-}" --argjson late "$LATE_S" --arg steps "$STEPS" \
  --slurpfile runs "$OUT/runs.json" --slurpfile scale "$OUT/scale.json" '
  {when: $when, machine: $machine, nginx: $nginx, libnginx_mod_rtmp: $rtmp, ffmpeg: $ffmpeg, git: $git,
   nice: (if $nice == "" then null else ($nice | tonumber) end), late_s: $late, steps: $steps,
   runs: $runs[0], scale: $scale[0],
   scale_max_ok_streams: ([$scale[0][] | select(.ok) | .streams] | max)}' >"$OUT/results.json"
rm -f "$OUT/runs.json" "$OUT/scale.json"

{
  echo "Reference setups: nginx-rtmp ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  jq -r '"machine: \(.machine); nginx \(.nginx), libnginx-mod-rtmp \(.libnginx_mod_rtmp); \(.ffmpeg); git \(.git)" +
    (if .nice != null then "; nginx and loadgen at nice \(.nice)" else "" end)' "$OUT/results.json"
  for run in "${RUNS[@]}" "${SCALE_RUNS[@]}"; do
    f=$OUT/$run.json
    echo
    jq -r '"== \(.name): \(.streams) x \(.input), \(.mode) ==" +
      (if .loadgen_exit != 0 then "\nWARNING: loadgen exited \(.loadgen_exit): " + (.errors | join("; ")) else "" end) +
      (if (.warnings | length) > 0 then "\nnote: " + (.warnings | join("; ")) else "" end)' "$f"
    jq -r '"rendition expected listed lost skipped median_s p95_s p99_s max_s",
      (.renditions[] | "\(.name) \(.expected) \(.listed) \(.lost) \(.skipped) \(.median_s) \(.p95_s) \(.p99_s) \(.max_s)")' "$f" |
      column -t -R 2,3,4,5,6,7,8,9 | sed 's/^/  /'
    jq -r '"nginx tree CPU \(.nginx_cpu_s) s = \(.nginx_cpu_per_media_s) CPU-s per media s; RSS idle \(.rss_idle_mb) MB, peak \(.rss_peak_mb) MB, (peak - idle) / streams \(.rss_per_stream_mb) MB",
      "loadgen \(.loadgen_cpu_s) CPU-s (not counted); other processes \(.others_cores) cores on average; publisher max write lag \(.max_write_lag_ms) ms",
      "MPEG-TS timeline: \(.timeline.ts_segments_read // 0) segment heads read, |first DTS - chunk start| <= \(.timeline.max_ts_start_vs_publisher_chunk_ms // 0) ms, \(.timeline.ts_segments_unaligned // 0) unaligned, \(.timeline.negative_delays) negative delays"' "$f" |
      sed 's/^/  /'
  done
  jq -r 'if (.scale | length) > 0 then "\nscale: largest N with nothing lost or later than \(.late_s) s: \(.scale_max_ok_streams // "none") (steps \(.steps))" else empty end' "$OUT/results.json"
} | tee "$OUT/summary.txt"
log "results in $OUT"
