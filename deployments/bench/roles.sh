#!/usr/bin/env bash
# Per-role costs behind docs/scaling.md: CPU of each gopcast role, of the NATS server and of the
# S3 server per published stream, NATS bytes and S3 requests per stream, and ffmpeg's CPU for
# one chunk of the default ladder on a 1080p and a 720p source.
#
# Everything runs on 127.0.0.1 with free ports, as separate processes wired the way the compose
# file and the Kubernetes manifests wire them (GOPCAST_* environment variables), and is stopped
# at exit:
#   1. builds gopcast, loadgen (cmd/loadgen) and nats-server (the module gopcast embeds);
#   2. generates once (cached) 60 s test inputs: 1080p30 H.264 High 6 Mbit/s and 720p30
#      3 Mbit/s, 2 s GOP, AAC 128k (ffmpeg testsrc2 + sine);
#   3. starts nats-server -js, MinIO, and gopcast api, ingest, transcoder and packager;
#   4. phase "passthrough": loadgen publishes PASS_STREAMS 1080p streams in real time for
#      SECONDS_MEDIA s with the passthrough profile (no encoding: the source and audio are
#      repackaged), then waits for every playlist's EXT-X-ENDLIST;
#   5. phase "ladder": LADDER_STREAMS stream(s) of LADDER_SECONDS s with the default ladder (it
#      may fall behind real time on 2 cores; loadgen waits for the backlog, up to 15 min);
#   6. for each phase: CPU seconds of every process from /proc/PID/stat (utime + stime, plus
#      cutime + cstime: the ffmpeg children the transcoder waited for), read just before the
#      publish and after the last ENDLIST, per media second and per chunk transcoded (the
#      transcoder's gopcast_transcoder_chunks_total); NATS in/out bytes and messages from
#      /varz; MinIO's S3 requests by API from its Prometheus endpoint (GETs are loadgen's
#      playlist polling every 100 ms, not a CDN's); peak RSS (VmHWM);
#   7. "per-chunk ffmpeg": both inputs cut into 2 s chunks (stream copy), the transcoder's exact
#      ladder arguments (loadgen ladder-args) run once per chunk under GNU time;
#   8. writes every figure to $OUT/results.json and a summary to $OUT/summary.txt.
#
# Usage: deployments/bench/roles.sh   (about 8 minutes on 2 cores, plus ~1.5 min the first time
#                                       to generate the inputs)
# Environment: SECONDS_MEDIA (60), PASS_STREAMS (8), LADDER_STREAMS (1), LADDER_SECONDS (30),
# OUT (results dir),
# BENCH_CACHE (input cache, ~/.cache/gopcast-bench), MINIO, FFMPEG, KEEP=1 keeps the work dir,
# BIN_DIR (use gopcast, loadgen and nats-server already built there instead of building them).
set -euo pipefail

cd "$(dirname "$0")/../.."
SECONDS_MEDIA=${SECONDS_MEDIA:-60}
PASS_STREAMS=${PASS_STREAMS:-8}
LADDER_STREAMS=${LADDER_STREAMS:-1}
LADDER_SECONDS=${LADDER_SECONDS:-30}
FFMPEG=${FFMPEG:-$(command -v ffmpeg || echo /usr/bin/ffmpeg)}
FFPROBE=${FFPROBE:-$(command -v ffprobe || echo /usr/bin/ffprobe)}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gopcast-bench}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gopcast-roles.XXXXXX")
OUT=${OUT:-$WORK/results}
TIME=/usr/bin/time
CLK_TCK=$(getconf CLK_TCK)

log() { printf 'roles: %s\n' "$*" >&2; }

find_minio() {
  if [ -n "${MINIO:-}" ]; then echo "$MINIO"; return; fi
  if command -v minio >/dev/null; then command -v minio; return; fi
  local gobin; gobin=$(go env GOBIN); [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
  if [ -x "$gobin/minio" ]; then echo "$gobin/minio"; return; fi
  echo "roles: no minio binary (scripts/deps.sh --with-minio installs it)" >&2; exit 1
}
for tool in "$FFMPEG" "$FFPROBE" jq curl; do
  command -v "$tool" >/dev/null || { echo "roles: $tool is required" >&2; exit 1; }
done
[ -x "$TIME" ] || { echo "roles: GNU time ($TIME) is required (apt-get install time)" >&2; exit 1; }
MINIO_BIN=$(find_minio)
mkdir -p "$OUT" "$BENCH_CACHE"

# --- everything started here is stopped at exit --------------------------------------------
PIDS=()
stop_pid() { # SIGTERM (ffmpeg children first: they run in their own process groups), then SIGKILL
  local pid=$1 i c
  kill -0 "$pid" 2>/dev/null || return 0
  for c in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill -TERM -- "-$c" 2>/dev/null || kill -TERM "$c" 2>/dev/null || true; done
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
  if [ "${KEEP:-0}" != 1 ]; then
    case "$OUT" in
      "$WORK"/*) find "$WORK" -mindepth 1 -maxdepth 1 ! -path "$OUT" -exec rm -rf {} + ;;
      *) rm -rf "$WORK" ;;
    esac
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # wait_http URL SECONDS
  local i
  for i in $(seq $(($2 * 10))); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "roles: $1 not ready after $2 s" >&2; return 1
}

# cpu PID: "self children" CPU seconds so far (fields counted after comm's closing parenthesis).
cpu() { sed 's/^.*) //' "/proc/$1/stat" | awk -v t="$CLK_TCK" '{printf "%.2f %.2f\n", ($12 + $13) / t, ($14 + $15) / t}'; }
hwm_mb() { awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

# --- 1. build ------------------------------------------------------------------------------------
BIN=${BIN_DIR:-$WORK/bin}
if [ -z "${BIN_DIR:-}" ]; then
  log "building gopcast, loadgen and nats-server"
  mkdir -p "$BIN"
  go build -trimpath -o "$BIN/gopcast" ./cmd/gopcast
  go build -o "$BIN/loadgen" ./cmd/loadgen
  go build -o "$BIN/nats-server" github.com/nats-io/nats-server/v2
fi
GOPCAST=$BIN/gopcast
LOADGEN=$BIN/loadgen

# --- 2. inputs (cached) --------------------------------------------------------------------------
gen_input() { # gen_input HEIGHT BITRATE -> path of the cached FLV
  local h=$1 b=$2 args key f
  args=(-hide_banner -loglevel error -nostdin -y
    -f lavfi -i "testsrc2=size=$((h * 16 / 9))x$h:rate=30"
    -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$SECONDS_MEDIA"
    -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p
    -b:v "$b" -maxrate "$b" -bufsize "$((2 * ${b%M}))M" -g 60 -keyint_min 60 -sc_threshold 0 -bf 2
    -c:a aac -b:a 128k -ar 48000 -ac 2)
  key=$(printf '%s\n' "$("$FFMPEG" -version | head -1)" "${args[@]}" | sha256sum | cut -c1-12)
  f=$BENCH_CACHE/roles-${h}p30-$b-aac-${SECONDS_MEDIA}s-$key.flv
  if [ ! -s "$f" ]; then
    log "generating $f (once; cached)"
    "$FFMPEG" "${args[@]}" -f flv "$f.tmp" && mv "$f.tmp" "$f"
  fi
  echo "$f"
}
IN1080=$(gen_input 1080 6M)
IN720=$(gen_input 720 3M)
vbitrate() { # video bits/s of a file, from its packets
  local bytes dur
  bytes=$("$FFPROBE" -v error -select_streams v:0 -show_entries packet=size -of csv=p=0 "$1" | awk '{s += $1} END {print s}')
  dur=$("$FFPROBE" -v error -show_entries format=duration -of csv=p=0 "$1")
  awk -v b="$bytes" -v d="$dur" 'BEGIN {printf "%d", b * 8 / d}'
}

# --- 3. servers and roles ---------------------------------------------------------------------------
mapfile -t P < <("$LOADGEN" ports 12)
NATS_PORT=${P[0]} NATS_MON=${P[1]} MINIO_PORT=${P[2]} MINIO_CONSOLE=${P[3]}
API_HTTP=${P[4]} INGEST_HTTP=${P[5]} RTMP=${P[6]} TRANS_HTTP=${P[7]} PACK_HTTP=${P[8]}
"$BIN/nats-server" -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -n bench \
  >"$OUT/nats.log" 2>&1 &
NATS_PID=$!; PIDS+=("$NATS_PID")
S3_ACCESS=gopcast-bench
S3_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$WORK/minio" "$WORK/minio-certs"
env $(env | grep -o '^MINIO_[A-Z_]*' | sed 's/^/-u /') \
  MINIO_ROOT_USER=$S3_ACCESS MINIO_ROOT_PASSWORD=$S3_SECRET MINIO_UPDATE=off MINIO_CI_CD=1 \
  MINIO_PROMETHEUS_AUTH_TYPE=public \
  "$MINIO_BIN" server "$WORK/minio" --address "127.0.0.1:$MINIO_PORT" \
  --console-address "127.0.0.1:$MINIO_CONSOLE" --certs-dir "$WORK/minio-certs" >"$OUT/minio.log" 2>&1 &
MINIO_PID=$!; PIDS+=("$MINIO_PID")
wait_http "http://127.0.0.1:$NATS_MON/healthz" 30
wait_http "http://127.0.0.1:$MINIO_PORT/minio/health/live" 60
"$LOADGEN" mkbucket --endpoint "http://127.0.0.1:$MINIO_PORT" --bucket gopcast \
  --access-key "$S3_ACCESS" --secret-key "$S3_SECRET"

TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export GOPCAST_NATS_URL=nats://127.0.0.1:$NATS_PORT GOPCAST_LOG_FORMAT=json GOPCAST_LOG_LEVEL=debug
export GOPCAST_PUBLIC_BASE_URL=http://127.0.0.1:$MINIO_PORT/gopcast GOPCAST_FFMPEG=$FFMPEG
declare -A ROLE_PID
start_role() { # start_role ROLE HTTP_PORT [VAR=value...]
  local role=$1 port=$2; shift 2
  env "$@" GOPCAST_HTTP_ADDR="127.0.0.1:$port" GOPCAST_DATA_DIR="$WORK/data-$role" \
    "$GOPCAST" "$role" >"$OUT/$role.out" 2>"$OUT/$role.log" &
  ROLE_PID[$role]=$!; PIDS+=("$!")
}
# The bucket, for every role that writes media: the ingest (source video and audio segments),
# the transcoder (the ladder's rungs) and the packager (init segments, playlists, manifests).
# Without it a role would write to its own --data-dir, where no player (or loadgen) looks.
S3_ENV=(GOPCAST_S3_ENDPOINT="http://127.0.0.1:$MINIO_PORT" GOPCAST_S3_BUCKET=gopcast
  GOPCAST_S3_ACCESS_KEY="$S3_ACCESS" GOPCAST_S3_SECRET_KEY="$S3_SECRET")
start_role api "$API_HTTP" GOPCAST_API_TOKEN="$TOKEN" GOPCAST_RTMP_PUBLIC_URL="rtmp://127.0.0.1:$RTMP/live"
start_role ingest "$INGEST_HTTP" "${S3_ENV[@]}" GOPCAST_RTMP_ADDR="127.0.0.1:$RTMP"
start_role transcoder "$TRANS_HTTP" "${S3_ENV[@]}"
start_role packager "$PACK_HTTP" "${S3_ENV[@]}"
for port in "$API_HTTP" "$INGEST_HTTP" "$TRANS_HTTP" "$PACK_HTTP"; do wait_http "http://127.0.0.1:$port/readyz" 60; done
log "nats $NATS_PID, minio $MINIO_PID, api ${ROLE_PID[api]}, ingest ${ROLE_PID[ingest]}, transcoder ${ROLE_PID[transcoder]}, packager ${ROLE_PID[packager]}"

# snapshot FILE: CPU of every process, NATS traffic, MinIO requests by API.
snapshot() {
  {
    for r in api ingest transcoder packager; do echo "cpu $r $(cpu "${ROLE_PID[$r]}")"; done
    echo "cpu nats $(cpu "$NATS_PID")"
    echo "cpu minio $(cpu "$MINIO_PID")"
    curl -fsS "http://127.0.0.1:$NATS_MON/varz" | jq -r '"nats \(.in_msgs) \(.out_msgs) \(.in_bytes) \(.out_bytes)"'
    curl -fsS "http://127.0.0.1:$TRANS_HTTP/metrics" | awk '$1 == "gopcast_transcoder_chunks_total" {print "chunks", $2}'
    curl -fsS "http://127.0.0.1:$MINIO_PORT/minio/v2/metrics/cluster" |
      awk '/^minio_s3_requests_total\{/ { match($0, /api="[^"]*"/); a = substr($0, RSTART + 5, RLENGTH - 6); s[a] += $NF }
           END { for (a in s) print "s3", a, s[a] }'
  } >"$1"
}

# phase NAME STREAMS PROFILE INPUT SECONDS
phase() {
  local name=$1 streams=$2 profile=$3 input=$4 media=$5 rc=0
  snapshot "$OUT/$name.before"
  log "$name: $streams stream(s) x $media s, profile $profile, $(basename "$input")"
  "$TIME" -f '%e %U %S' -o "$OUT/$name.loadgen.time" \
    "$LOADGEN" run --api "http://127.0.0.1:$API_HTTP" --token "$TOKEN" --input "$input" \
    --streams "$streams" --duration "${media}s" --profile "$profile" --stagger 250ms --end-timeout 15m \
    --json "$OUT/$name.loadgen.json" >"$OUT/$name.loadgen.txt" 2>"$OUT/$name.loadgen.err" || rc=$?
  snapshot "$OUT/$name.after"
  cat "$OUT/$name.loadgen.txt" >&2
  [ $rc -eq 0 ] || { log "$name: loadgen failed ($rc)"; cat "$OUT/$name.loadgen.err" >&2; }
  # Figures per stream: CPU-seconds per media second (= cores per stream), NATS bytes/s, S3 requests/s.
  jq -n --arg name "$name" --arg profile "$profile" --argjson streams "$streams" \
    --argjson media "$media" --argjson vbitrate "$(vbitrate "$input")" --argjson rc "$rc" \
    --rawfile b "$OUT/$name.before" --rawfile a "$OUT/$name.after" --slurpfile lg "$OUT/$name.loadgen.json" '
    def rows(s): s | split("\n") | map(select(length > 0) | split(" "));
    def cpu(s): rows(s) | map(select(.[0] == "cpu") | {key: .[1], value: {self: (.[2] | tonumber), children: (.[3] | tonumber)}}) | from_entries;
    def nats(s): rows(s) | map(select(.[0] == "nats"))[0] | map(tonumber? // 0) | {in_msgs: .[1], out_msgs: .[2], in_bytes: .[3], out_bytes: .[4]};
    def s3(s): rows(s) | map(select(.[0] == "s3") | {key: .[1], value: (.[2] | tonumber)}) | from_entries;
    def chunks(s): rows(s) | map(select(.[0] == "chunks"))[0][1] | tonumber;
    (cpu($b)) as $cb | (cpu($a)) as $ca | (nats($b)) as $nb | (nats($a)) as $na | (s3($b)) as $sb | (s3($a)) as $sa |
    ($streams * $media) as $sm | (chunks($a) - chunks($b)) as $nc |
    {name: $name, profile: $profile, streams: $streams, media_seconds_per_stream: $media, source_video_bps: $vbitrate,
     loadgen_exit: $rc,
     segments: ($lg[0].overall | {expected: .segments_expected, listed: .segments_listed, gaps, lost, delay_median_s: .delay_s.median, delay_p95_s: .delay_s.p95}),
     cpu_seconds: ($ca | to_entries | map({key, value: {self: (.value.self - $cb[.key].self), ffmpeg_children: (.value.children - $cb[.key].children)}}) | from_entries),
     chunks_transcoded: $nc,
     # Passthrough chunks never reach a transcoder: per chunk transcoded is for the ladder.
     cpu_seconds_per_chunk: (if $nc > 0 then ($ca | to_entries | map({key, value: (((.value.self + .value.children) - ($cb[.key].self + $cb[.key].children)) / $nc)}) | from_entries) else null end),
     cores_per_stream: ($ca | to_entries | map({key, value: (((.value.self + .value.children) - ($cb[.key].self + $cb[.key].children)) / $sm)}) | from_entries),
     nats_per_stream_per_s: {in_bytes: (($na.in_bytes - $nb.in_bytes) / $sm), out_bytes: (($na.out_bytes - $nb.out_bytes) / $sm),
       in_msgs: (($na.in_msgs - $nb.in_msgs) / $sm), out_msgs: (($na.out_msgs - $nb.out_msgs) / $sm)},
     s3_requests: ($sa | to_entries | map({key, value: (.value - ($sb[.key] // 0))}) | map(select(.value > 0)) | from_entries),
     s3_requests_per_stream_per_s: ($sa | to_entries | map({key, value: ((.value - ($sb[.key] // 0)) / $sm)}) | map(select(.value > 0)) | from_entries)}' \
    >"$OUT/$name.json"
}
phase passthrough "$PASS_STREAMS" passthrough "$IN1080" "$SECONDS_MEDIA"
phase ladder "$LADDER_STREAMS" default "$IN1080" "$LADDER_SECONDS"
for r in api ingest transcoder packager; do echo "$r $(hwm_mb "${ROLE_PID[$r]}")"; done >"$OUT/hwm.txt"
echo "nats $(hwm_mb "$NATS_PID")" >>"$OUT/hwm.txt"
echo "minio $(hwm_mb "$MINIO_PID")" >>"$OUT/hwm.txt"
for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
PIDS=()

# --- 7. per-chunk ffmpeg, default ladder ------------------------------------------------------------
chunked() { # chunked NAME INPUT -> $OUT/chunk-NAME.json
  local name=$1 input=$2 h b n=0 f
  h=$("$FFPROBE" -v error -select_streams v:0 -show_entries stream=height -of csv=p=0 "$input")
  b=$(vbitrate "$input")
  mkdir -p "$WORK/chunks-$name"
  "$FFMPEG" -hide_banner -loglevel error -nostdin -y -i "$input" -map 0:v -c copy -f segment -segment_time 2 \
    -segment_format mpegts "$WORK/chunks-$name/c%03d.ts"
  for f in "$WORK/chunks-$name"/c*.ts; do
    mkdir -p "${f%.ts}.out"
    "$LOADGEN" ladder-args --input "$f" --out-dir "${f%.ts}.out" --profile default --src-height "$h" \
      --src-bitrate "$b" --fps 30 >"${f%.ts}.args"
    n=$((n + 1))
  done
  "$LOADGEN" ladder-args --input IN.ts --out-dir OUT --profile default --src-height "$h" --src-bitrate "$b" --lines \
    >"$OUT/chunk-$name.args.txt"
  log "per-chunk ffmpeg, $name: $n chunks"
  : >"$OUT/chunk-$name.times"
  for f in "$WORK/chunks-$name"/c*.args; do
    "$TIME" -a -f '%e %U %S' -o "$OUT/chunk-$name.times" xargs -0 -a "$f" "$FFMPEG"
  done
  awk -v name="$name" -v h="$h" -v b="$b" -v n="$n" -v media="$SECONDS_MEDIA" \
    '{w += $1; c += $2 + $3; if ($1 > m) m = $1}
     END {printf "{\"name\":\"%s\",\"source_height\":%d,\"source_video_bps\":%d,\"chunks\":%d,\"media_seconds\":%s,\"cpu_seconds\":%.2f,\"wall_seconds\":%.2f,\"max_chunk_wall_s\":%.2f,\"cores_per_stream\":%.3f,\"cpu_s_per_chunk\":%.3f}\n",
          name, h, b, n, media, c, w, m, c / media, c / n}' "$OUT/chunk-$name.times" >"$OUT/chunk-$name.json"
}
chunked 1080p "$IN1080"
chunked 720p "$IN720"

# --- 8. results -------------------------------------------------------------------------------------
jq -n --arg when "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --arg machine "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  --arg ffmpeg "$("$FFMPEG" -version | head -1 | cut -d' ' -f1-3)" \
  --arg git "$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')" \
  --rawfile hwm "$OUT/hwm.txt" \
  --slurpfile pass "$OUT/passthrough.json" --slurpfile lad "$OUT/ladder.json" \
  --slurpfile c1080 "$OUT/chunk-1080p.json" --slurpfile c720 "$OUT/chunk-720p.json" '
  {when: $when, machine: $machine, ffmpeg: $ffmpeg, git: $git,
   peak_rss_mb: ($hwm | split("\n") | map(select(length > 0) | split(" ") | {key: .[0], value: (.[1] | tonumber)}) | from_entries),
   phases: [$pass[0], $lad[0]], per_chunk_ffmpeg: [$c1080[0], $c720[0]]}' >"$OUT/results.json"
jq . "$OUT/results.json" | tee "$OUT/summary.txt"
log "results in $OUT"
