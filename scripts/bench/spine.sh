#!/usr/bin/env bash
# Pipeline spine benchmark (issue 2): how long after the publisher sends a segment's media is it
# listed in the HLS playlists, and how much CPU gopcast (every role and its ffmpeg children)
# spends per media second compared with one plain continuous ffmpeg encoding the same ladder.
#
# Everything runs on 127.0.0.1 with free ports and is stopped at exit:
#   1. builds ./cmd/gopcast (the working tree, or REV) and ./cmd/loadgen;
#   2. generates once (cached) a 60 s 1920x1080 30 fps H.264 High FLV (2 s GOP, B-frames,
#      6 Mbit/s) with AAC 128k, from ffmpeg's testsrc2 and sine;
#   3. S3 run: MinIO + `gopcast all --profile default`; loadgen publishes 1 stream for 60 s in
#      real time and measures listing delays (see cmd/loadgen). CPU of the gopcast process =
#      utime+stime+cutime+cstime from /proc/PID/stat (cutime/cstime hold every ffmpeg it ran and
#      waited for), read before the publish and after every playlist has EXT-X-ENDLIST, while
#      gopcast still runs; MinIO's CPU is read the same way and reported apart;
#   4. the same with --profile passthrough (unless PASSTHROUGH=0): no encoding, so the delay
#      that is the pipeline's own;
#   5. local run (unless LOCAL=0): `gopcast all` storing media in its data dir, served at /media/;
#   6. plain ffmpeg: the transcoder's exact ladder arguments (loadgen ladder-args: same rungs,
#      preset, GOP, x264 options) over the whole file as MPEG-TS in one run, the same run at the
#      file's own pace (-re, as a live encoder runs), then the same arguments once per 2 s chunk
#      (ffmpeg's per-chunk cost, without gopcast);
#   7. prints the figures and writes them to $OUT (summary.txt, *.json, logs).
#
# Usage: scripts/bench/spine.sh   (about 8 minutes on an idle 2-core machine that keeps up; the
#                                  first run adds a minute to generate the input)
# Environment:
#   SECONDS_MEDIA (60), STREAMS (1); S3, PASSTHROUGH, LOCAL, PLAIN (1): set 0 to skip the S3
#                  runs, the passthrough run, the local-storage run, the ffmpeg-only runs
#   OUT            results directory (default: a results/ dir in the temporary work dir, kept)
#   BENCH_CACHE    input cache (default ~/.cache/gopcast-bench)
#   REV            build gopcast at this git revision (git archive; the checkout is untouched)
#   TRANSCODER_CONCURRENCY  gopcast's --transcoder-concurrency (default: gopcast's, half the CPUs)
#   QUIET_CORES, QUIET_MAX  wait before each measurement until the machine is this idle (0.2
#                  cores busy over 5 s), at most QUIET_MAX s (600); the CPU other processes
#                  took during each measurement is printed with it either way
#   MAX_OTHERS_CORES, ATTEMPTS  a measurement during which other processes used more than 0.25
#                  cores on average is repeated, up to 3 attempts; the least disturbed is kept
#   BENCH_NICE     e.g. -10: run what is measured at that niceness (root), without waiting
#   END_TIMEOUT    how long loadgen waits for EXT-X-ENDLIST after publishing (15m)
#   MINIO, FFMPEG, FFPROBE  binaries; KEEP=1 keeps the whole work dir
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$(pwd)
SECONDS_MEDIA=${SECONDS_MEDIA:-60}
STREAMS=${STREAMS:-1}
LOCAL=${LOCAL:-1}
PASSTHROUGH=${PASSTHROUGH:-1}
PLAIN=${PLAIN:-1}
S3=${S3:-1}
FFMPEG=${FFMPEG:-$(command -v ffmpeg || echo /usr/bin/ffmpeg)}
FFPROBE=${FFPROBE:-$(command -v ffprobe || echo /usr/bin/ffprobe)}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gopcast-bench}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gopcast-spine.XXXXXX")
OUT=${OUT:-$WORK/results}
TIME=/usr/bin/time
NICE=()
if [ -n "${BENCH_NICE:-}" ]; then NICE=(nice -n "$BENCH_NICE"); : "${QUIET_MAX:=0}"; fi
CLK_TCK=$(getconf CLK_TCK)
log() { printf 'spine: %s\n' "$*" >&2; }
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh

for tool in "$FFMPEG" "$FFPROBE" jq curl; do
  command -v "$tool" >/dev/null || { echo "spine: $tool is required" >&2; exit 1; }
done
[ -x "$TIME" ] || { echo "spine: GNU time ($TIME) is required (apt-get install time)" >&2; exit 1; }
MINIO_BIN=$(find_minio)
mkdir -p "$OUT" "$BENCH_CACHE"

# --- everything started here is stopped at exit --------------------------------------------
stop_at_exit

# --- 1. build --------------------------------------------------------------------------------
mkdir -p "$WORK/bin"
if [ -n "${REV:-}" ]; then
  # Measure a committed revision: its tree, exported without touching the checkout.
  GOPCAST_VERSION=$(git rev-parse --short "$REV^{commit}")
  log "building ./cmd/gopcast at $REV ($GOPCAST_VERSION) and ./cmd/loadgen from the working tree"
  mkdir -p "$WORK/src"
  git archive "$REV" | tar -x -C "$WORK/src"
  (cd "$WORK/src" && go build -o "$WORK/bin/gopcast" ./cmd/gopcast)
else
  GOPCAST_VERSION=$(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')
  log "building ./cmd/gopcast and ./cmd/loadgen from the working tree ($GOPCAST_VERSION)"
  go build -o "$WORK/bin/gopcast" ./cmd/gopcast
fi
go build -o "$WORK/bin/loadgen" ./cmd/loadgen
GOPCAST=$WORK/bin/gopcast
LOADGEN=$WORK/bin/loadgen

# --- 2. input (cached) -------------------------------------------------------------------------
INPUT=$(bench_input spine-1080p30-high-6M-aac 1080 6M "$SECONDS_MEDIA")
INPUT_TS=${INPUT%.flv}.ts
if [ ! -s "$INPUT_TS" ]; then
  "$FFMPEG" -hide_banner -loglevel error -nostdin -y -i "$INPUT" -c copy -f mpegts "$INPUT_TS.tmp" && mv "$INPUT_TS.tmp" "$INPUT_TS"
fi
SRC_HEIGHT=$("$FFPROBE" -v error -select_streams v:0 -show_entries stream=height -of csv=p=0 "$INPUT")
SRC_VBYTES=$("$FFPROBE" -v error -select_streams v:0 -show_entries packet=size -of csv=p=0 "$INPUT" | awk '{s += $1} END {print s}')
SRC_DUR=$("$FFPROBE" -v error -show_entries format=duration -of csv=p=0 "$INPUT")
SRC_VBITRATE=$(awk -v b="$SRC_VBYTES" -v d="$SRC_DUR" 'BEGIN {printf "%d", b * 8 / d}')
log "input: ${SRC_HEIGHT}p, video $(awk -v r="$SRC_VBITRATE" 'BEGIN {printf "%.2f", r / 1e6}') Mbit/s, ${SRC_DUR} s"

TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

# measure NAME CMD...: runs a measurement CMD that writes $OUT/NAME.* and, in $OUT/NAME.others,
# how many cores other processes used meanwhile. While that is over MAX_OTHERS_CORES (0.25) it
# waits for quiet and measures again, up to ATTEMPTS (3) times, and keeps the attempt with the
# least interference.
measure() {
  local name=$1; shift
  local attempt best="" oc log="$OUT/attempts/$name.log"
  mkdir -p "$OUT/attempts"
  : >"$log"
  for attempt in $(seq "${ATTEMPTS:-3}"); do
    quiet_wait
    "$@"
    oc=$(cat "$OUT/$name.others")
    echo "attempt $attempt: other processes used $oc cores on average" >>"$log"
    if [ -z "$best" ] || awk -v a="$oc" -v b="$best" 'BEGIN {exit !(a < b)}'; then
      best=$oc
      rm -rf "$OUT/attempts/$name"; mkdir -p "$OUT/attempts/$name"
      cp "$OUT/$name".* "$OUT/attempts/$name/"
    fi
    if awk -v a="$oc" -v m="${MAX_OTHERS_CORES:-0.25}" 'BEGIN {exit !(a <= m)}'; then break; fi
    [ "$attempt" -lt "${ATTEMPTS:-3}" ] && log "$name: other processes used $oc cores meanwhile; measuring again"
  done
  cp "$OUT/attempts/$name/"* "$OUT/"
  { cat "$log"; echo "kept the attempt with $best cores of interference"; } >"$OUT/$name.attempts"
  rm -rf "$OUT/attempts/$name" "$log"; rmdir "$OUT/attempts" 2>/dev/null || true
}

# run_gopcast NAME PROFILE [extra gopcast flags...]: starts `gopcast all` with PROFILE as its
# default ladder, runs loadgen against it, records CPU and logs under $OUT/NAME.*, stops gopcast.
run_gopcast_once() {
  local name=$1 profile=$2; shift 2
  local ports http rtmp gpid before after
  mapfile -t ports < <("$LOADGEN" ports 2)
  http=${ports[0]}; rtmp=${ports[1]}
  local public=${PUBLIC_BASE:-http://127.0.0.1:$http/media}
  "${NICE[@]}" "$GOPCAST" all --http-addr "127.0.0.1:$http" --rtmp-addr "127.0.0.1:$rtmp" \
    --rtmp-public-url "rtmp://127.0.0.1:$rtmp/live" --public-base-url "$public" \
    --data-dir "$WORK/gopcast-$name" --api-token "$TOKEN" --profile "$profile" \
    --ffmpeg "$FFMPEG" --log-format json --log-level debug \
    ${TRANSCODER_CONCURRENCY:+--transcoder-concurrency "$TRANSCODER_CONCURRENCY"} "$@" \
    >"$OUT/$name.gopcast.out" 2>"$OUT/$name.gopcast.log" &
  gpid=$!
  PIDS+=("$gpid")
  wait_http "http://127.0.0.1:$http/readyz" 60
  before=$(cpu_ticks "$gpid")
  local mbefore=""; [ -n "${MINIO_PID:-}" ] && mbefore=$(cpu_ticks "$MINIO_PID")
  local busy_before; busy_before=$(busy_ticks)
  log "$name: publishing ${SECONDS_MEDIA} s x $STREAMS stream(s) through gopcast (pid $gpid, profile $profile)"
  local rc=0
  supervise "${NICE[@]}" "$TIME" -f '%e %U %S' -o "$OUT/$name.loadgen.time" \
    "$LOADGEN" run --api "http://127.0.0.1:$http" --token "$TOKEN" --input "$INPUT" \
    --streams "$STREAMS" --duration "${SECONDS_MEDIA}s" --profile "$profile" --end-timeout "${END_TIMEOUT:-15m}" \
    --json "$OUT/$name.loadgen.json" >"$OUT/$name.loadgen.txt" 2>"$OUT/$name.loadgen.err" || rc=$?
  after=$(cpu_ticks "$gpid")
  local mafter=""; [ -n "${MINIO_PID:-}" ] && mafter=$(cpu_ticks "$MINIO_PID")
  local busy_after; busy_after=$(busy_ticks)
  cat "$OUT/$name.loadgen.txt" >&2
  [ $rc -eq 0 ] || { log "$name: loadgen failed ($rc):"; cat "$OUT/$name.loadgen.err" >&2; }
  stop_tree "$gpid"
  local storage=local; [ -z "${MINIO_PID:-}" ] || storage=s3
  jq -n --arg name "$name" --argjson tck "$CLK_TCK" --arg profile "$profile" --arg storage "$storage" \
    --arg conc "${TRANSCODER_CONCURRENCY:-default (half the CPUs)}" \
    --arg b "$before" --arg a "$after" --arg mb "$mbefore" --arg ma "$mafter" \
    --argjson busy "$((busy_after - busy_before))" \
    --slurpfile lg "$OUT/$name.loadgen.json" --rawfile lt "$OUT/$name.loadgen.time" '
    def ticks(s): s | split(" ") | map(tonumber);
    (ticks($b)) as $b | (ticks($a)) as $a |
    ($lg[0].media_seconds_per_stream * $lg[0].streams) as $media |
    ((($a[0] + $a[1]) - ($b[0] + $b[1])) / $tck) as $self |
    ((($a[2] + $a[3]) - ($b[2] + $b[3])) / $tck) as $children |
    {name: $name, storage: $storage, profile: $profile, transcoder_concurrency: $conc, media_seconds: $media,
     gopcast_cpu_s: ($self + $children), gopcast_go_cpu_s: $self, ffmpeg_children_cpu_s: $children,
     gopcast_cpu_per_media_s: (($self + $children) / $media),
     minio_cpu_s: (if $mb == "" then null else ((ticks($ma) | .[0] + .[1]) - (ticks($mb) | .[0] + .[1])) / $tck end),
     loadgen_exit: '"$rc"'} |
    ($lt | split("\n") | map(select(length > 0)) | last | split(" ") | map(tonumber)) as $t |
    .loadgen_cpu_s = ($t[1] + $t[2]) | .wall_s = $t[0] |
    .machine_busy_cpu_s = ($busy / $tck) |
    .others_cpu_s = (.machine_busy_cpu_s - .gopcast_cpu_s - (.minio_cpu_s // 0) - .loadgen_cpu_s)' >"$OUT/$name.cpu.json"
  jq '.others_cpu_s / .wall_s * 1000 | round / 1000' "$OUT/$name.cpu.json" >"$OUT/$name.others"
  # Where the delay goes, per segment n of stream 0 (the ladder's, whose record comes last):
  # publisher media end -> the chunk's end in the transcoder (ingest cut, its last part and end
  # through JetStream; the chunk was encoded as its parts came) -> its rungs written and its
  # record out (the rest of the encode: x264's last frames wait for the next chunk's first) ->
  # listed (packager: inits, playlists; plus the poll's resolution). The middle comes from the
  # transcoder's "chunk transcoded" debug log: took, from the chunk's end reaching its session's
  # finisher to its record published.
  jq -s --slurpfile lg "$OUT/$name.loadgen.json" '
    def unix: (sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601) + ((capture("\\.(?<f>[0-9]+)Z$").f // "0") | ("0." + .) | tonumber);
    def pct(p): sort | .[((p / 100 * length) | ceil) - 1 | if . < 0 then 0 else . end];
    def summary: {n: length, median: pct(50), p95: pct(95), max: max};
    ($lg[0].per_stream[0]) as $s |
    [ .[] | select(.msg == "chunk transcoded" and .stream_id == $s.id and .took != null) |
      {seq, end: (.time | unix), took: (.took / 1e9)} ] as $tc |
    [ $s.segments[$lg[0].ref_rendition][] | select(.media_end_wall_unix != null) | . as $seg |
      ($tc | map(select(.seq == $seg.n)) | first) as $t | select($t != null) |
      {n, to_transcode_start: (($t.end - $t.took) - .media_end_wall_unix), transcode: $t.took,
       transcode_end_to_listed: (.listed_unix - $t.end), total: .delay_s} ] as $rows |
    {segments: ($rows | length), chunks: ($tc | length),
     to_transcode_start_s: ($rows | map(.to_transcode_start) | summary),
     transcode_s: ($rows | map(.transcode) | summary),
     transcode_end_to_listed_s: ($rows | map(.transcode_end_to_listed) | summary),
     total_s: ($rows | map(.total) | summary),
     all_chunks_transcode_s: ($tc | map(.took) | summary)}' \
    <(grep '^{' "$OUT/$name.gopcast.log") >"$OUT/$name.breakdown.json" || log "$name: no breakdown (jq failed)"
}
run_gopcast() { measure "$1" run_gopcast_once "$@"; }

# --- 3. S3 (MinIO) run ---------------------------------------------------------------------------
if [ "$S3" = 1 ]; then
  mapfile -t MPORTS < <("$LOADGEN" ports 2)
  S3_ENDPOINT=http://127.0.0.1:${MPORTS[0]}
  S3_BUCKET=gopcast-bench
  S3_ACCESS=gopcast-bench
  S3_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  log "starting MinIO at $S3_ENDPOINT"
  mkdir -p "$WORK/minio" "$WORK/minio-certs"
  "${NICE[@]}" env $(env | grep -o '^MINIO_[A-Z_]*' | sed 's/^/-u /') \
    MINIO_ROOT_USER=$S3_ACCESS MINIO_ROOT_PASSWORD=$S3_SECRET MINIO_UPDATE=off MINIO_CI_CD=1 \
    "$MINIO_BIN" server "$WORK/minio" --address "127.0.0.1:${MPORTS[0]}" \
    --console-address "127.0.0.1:${MPORTS[1]}" --certs-dir "$WORK/minio-certs" >"$OUT/minio.log" 2>&1 &
  MINIO_PID=$!
  PIDS+=("$MINIO_PID")
  wait_http "$S3_ENDPOINT/minio/health/live" 60
  "$LOADGEN" mkbucket --endpoint "$S3_ENDPOINT" --bucket "$S3_BUCKET" --access-key "$S3_ACCESS" --secret-key "$S3_SECRET"
  S3_FLAGS=(--s3-endpoint "$S3_ENDPOINT" --s3-bucket "$S3_BUCKET" --s3-region us-east-1
    --s3-access-key "$S3_ACCESS" --s3-secret-key "$S3_SECRET")
  PUBLIC_BASE=$S3_ENDPOINT/$S3_BUCKET run_gopcast s3 default "${S3_FLAGS[@]}"
  if [ "$PASSTHROUGH" = 1 ]; then
    # The same pipeline without encoding: the share of the delay that is not ffmpeg's.
    PUBLIC_BASE=$S3_ENDPOINT/$S3_BUCKET run_gopcast s3-passthrough passthrough "${S3_FLAGS[@]}"
  fi
  stop_tree "$MINIO_PID"
  MINIO_PID=
fi

# --- 4. local storage run ------------------------------------------------------------------------
if [ "$LOCAL" = 1 ]; then
  run_gopcast local default
fi

# --- 5. plain ffmpeg with the same ladder --------------------------------------------------------
if [ "$PLAIN" = 1 ]; then
  LADDER=(--profile default --src-height "$SRC_HEIGHT" --src-bitrate "$SRC_VBITRATE" --fps 30)
  mkdir -p "$WORK/plain"
  mapfile -d '' PLAIN_ARGS < <("$LOADGEN" ladder-args --input "$INPUT_TS" --out-dir "$WORK/plain" "${LADDER[@]}")
  printf '%s\n' "${PLAIN_ARGS[@]}" >"$OUT/plain.ffmpeg-args.txt"
  # time_ffmpeg NAME CMD...: runs CMD under GNU time into $OUT/NAME.time and notes the CPU the
  # rest of the machine used meanwhile.
  time_ffmpeg() {
    local name=$1; shift
    local b0; b0=$(busy_ticks)
    supervise "${NICE[@]}" "$TIME" -f '%e %U %S' -o "$OUT/$name.time" "$@"
    echo $(($(busy_ticks) - b0)) >"$OUT/$name.busy"
    awk -v busy="$(cat "$OUT/$name.busy")" -v t="$CLK_TCK" 'NF == 3 {w = $1; c = $2 + $3} END {printf "%.3f\n", (busy / t - c) / w}' \
      "$OUT/$name.time" >"$OUT/$name.others"
  }
  log "plain ffmpeg: one continuous run of the transcoder's ladder over the whole file"
  measure plain time_ffmpeg plain "$FFMPEG" "${PLAIN_ARGS[@]}"
  # The same at the input's own pace (-re), as a live encoder runs: x264's threads then wait
  # for every frame instead of always having the next one, which costs CPU of its own.
  log "plain ffmpeg in real time: the same, reading the file at its own pace (-re)"
  measure plain-realtime time_ffmpeg plain-realtime "$FFMPEG" -re "${PLAIN_ARGS[@]}"

  log "per-chunk ffmpeg: the same arguments run once per 2 s chunk (no gopcast)"
  mkdir -p "$WORK/chunks"
  "$FFMPEG" -hide_banner -loglevel error -nostdin -y -i "$INPUT_TS" -c copy -f segment -segment_time 2 \
    -segment_format mpegts "$WORK/chunks/c%03d.ts"
  NCHUNKS=0
  for f in "$WORK"/chunks/c*.ts; do
    mkdir -p "${f%.ts}.out"
    "$LOADGEN" ladder-args --input "$f" --out-dir "${f%.ts}.out" "${LADDER[@]}" >"${f%.ts}.args"
    NCHUNKS=$((NCHUNKS + 1))
  done
  # GNU time counts the shell and every ffmpeg it waited for.
  measure chunked time_ffmpeg chunked bash -c '
  set -e
  for a in "$1"/c*.args; do xargs -0 -a "$a" "$2"; done' _ "$WORK/chunks" "$FFMPEG"
  jq -n --argjson media "$SRC_DUR" --argjson chunks "$NCHUNKS" --argjson tck "$CLK_TCK" \
    --argjson pbusy "$(cat "$OUT/plain.busy")" --argjson cbusy "$(cat "$OUT/chunked.busy")" \
    --argjson rbusy "$(cat "$OUT/plain-realtime.busy")" --rawfile rt "$OUT/plain-realtime.time" \
    --rawfile pt "$OUT/plain.time" --rawfile ct "$OUT/chunked.time" '
    def t(s): s | split("\n") | map(select(length > 0)) | last | split(" ") | map(tonumber) | {wall_s: .[0], cpu_s: (.[1] + .[2])};
    (t($pt)) as $p | (t($ct)) as $c | (t($rt)) as $r |
    {media_seconds: $media,
     plain: ($p + {cpu_per_media_s: ($p.cpu_s / $media), speed: ($media / $p.wall_s), others_cpu_s: ($pbusy / $tck - $p.cpu_s)}),
     plain_realtime: ($r + {cpu_per_media_s: ($r.cpu_s / $media), others_cpu_s: ($rbusy / $tck - $r.cpu_s)}),
     chunked: ($c + {chunks: $chunks, cpu_per_media_s: ($c.cpu_s / $media), others_cpu_s: ($cbusy / $tck - $c.cpu_s)})}' >"$OUT/ffmpeg.json"
fi

# --- 6. summary ------------------------------------------------------------------------------------
{
  echo "Pipeline spine benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $("$FFMPEG" -version | head -1 | cut -d' ' -f1-3); $(go version | cut -d' ' -f3-4); gopcast $GOPCAST_VERSION"
  [ -z "${BENCH_NICE:-}" ] || echo "measured processes ran at nice $BENCH_NICE"
  echo "input: $(basename "$INPUT") (${SRC_HEIGHT}p30, video $(awk -v r="$SRC_VBITRATE" 'BEGIN {printf "%.2f", r / 1e6}') Mbit/s, ${SRC_DUR} s)"
  PLAIN_CPM=null
  PLAIN_RT_CPM=null
  [ ! -f "$OUT/ffmpeg.json" ] || PLAIN_CPM=$(jq .plain.cpu_per_media_s "$OUT/ffmpeg.json")
  [ ! -f "$OUT/ffmpeg.json" ] || PLAIN_RT_CPM=$(jq '.plain_realtime.cpu_per_media_s // null' "$OUT/ffmpeg.json")
  for name in s3 local s3-passthrough; do
    [ -f "$OUT/$name.cpu.json" ] || continue
    echo
    jq -r '"== gopcast all: run \(.name), storage \(.storage), profile \(.profile), transcoder concurrency \(.transcoder_concurrency) =="' "$OUT/$name.cpu.json"
    sed -n '/^ *rendition/,/^ *all /p' "$OUT/$name.loadgen.txt"
    sed 's/^/  /' "$OUT/$name.attempts"
    grep -E '^(timeline check|stream [0-9])' "$OUT/$name.loadgen.txt" || true
    jq -r --argjson plain "$PLAIN_CPM" --argjson plainrt "$PLAIN_RT_CPM" '
      (if .loadgen_exit != 0 then "WARNING: loadgen exited \(.loadgen_exit) (see \(.name).loadgen.err): figures below are incomplete\n" else "" end) +
      "CPU: gopcast \(.gopcast_cpu_s * 100 | round / 100) s (Go process \(.gopcast_go_cpu_s * 100 | round / 100) s + ffmpeg children \(.ffmpeg_children_cpu_s * 100 | round / 100) s) for \(.media_seconds) media s = \(.gopcast_cpu_per_media_s * 1000 | round / 1000) CPU-s per media s" +
      (if .profile == "passthrough" then " (no encoding)" elif $plain == null then "" else "; ratio to plain ffmpeg \(.gopcast_cpu_per_media_s / $plain * 100 | round / 100)x" +
        (if $plainrt == null then "" else ", to plain ffmpeg in real time \(.gopcast_cpu_per_media_s / $plainrt * 100 | round / 100)x" end) end) +
      (if .minio_cpu_s != null then "\n     MinIO \(.minio_cpu_s * 100 | round / 100) s" else "" end) +
      "; loadgen \(.loadgen_cpu_s * 100 | round / 100) s (not counted)" +
      "\n     wall \(.wall_s) s; other processes on the machine used \(.others_cpu_s * 10 | round / 10) CPU-s meanwhile (\(.others_cpu_s / .wall_s * 100 | round / 100) cores on average)"' "$OUT/$name.cpu.json"
    # A passthrough run transcodes nothing: no breakdown.
    if [ -s "$OUT/$name.breakdown.json" ] && jq -e ".segments > 0" "$OUT/$name.breakdown.json" >/dev/null; then jq -r '
      def f: "\(.median * 1000 | round) / \(.p95 * 1000 | round) / \(.max * 1000 | round) ms";
      "breakdown (median / p95 / max over \(.segments) segments of \(.chunks) chunks transcoded):",
      "  media end -> chunk end in the transcoder (ingest cut, last part through JetStream): \(.to_transcode_start_s | f)",
      "  the rest of the encode (x264 flushes a chunk with the next chunk frames), rungs written: \(.transcode_s | f)",
      "  record out -> listed (packager: inits, playlists; the poll):  \(.transcode_end_to_listed_s | f)",
      "  total:                                                          \(.total_s | f)"' "$OUT/$name.breakdown.json"; fi
  done
  [ -f "$OUT/ffmpeg.json" ] || exit 0
  echo
  jq -r '
    "plain ffmpeg, one continuous run, same ladder: \(.plain.cpu_s * 100 | round / 100) CPU-s for \(.media_seconds) media s = \(.plain.cpu_per_media_s * 1000 | round / 1000) CPU-s per media s (wall \(.plain.wall_s) s, \(.plain.speed * 100 | round / 100)x real time; other processes used \(.plain.others_cpu_s * 10 | round / 10) CPU-s meanwhile)",
    "plain ffmpeg in real time (-re), same ladder: \(.plain_realtime.cpu_s * 100 | round / 100) CPU-s = \(.plain_realtime.cpu_per_media_s * 1000 | round / 1000) CPU-s per media s = \(.plain_realtime.cpu_per_media_s / .plain.cpu_per_media_s * 100 | round / 100)x plain (wall \(.plain_realtime.wall_s) s; others \(.plain_realtime.others_cpu_s * 10 | round / 10) CPU-s)",
    "same ffmpeg arguments once per chunk (\(.chunked.chunks) runs, no gopcast): \(.chunked.cpu_s * 100 | round / 100) CPU-s = \(.chunked.cpu_per_media_s * 1000 | round / 1000) CPU-s per media s = \(.chunked.cpu_per_media_s / .plain.cpu_per_media_s * 100 | round / 100)x plain (wall \(.chunked.wall_s) s; others \(.chunked.others_cpu_s * 10 | round / 10) CPU-s)"' "$OUT/ffmpeg.json"
  sed 's/^/  plain /' "$OUT/plain.attempts"; sed 's/^/  plain-realtime /' "$OUT/plain-realtime.attempts"; sed 's/^/  chunked /' "$OUT/chunked.attempts"
} | tee "$OUT/summary.txt"
echo "spine: results in $OUT" >&2
