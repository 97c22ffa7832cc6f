#!/usr/bin/env bash
# gopcast's side of the benchmark scenario "N passthrough 720p 3 Mbit/s streams, N stepping up
# until a segment is lost or late" (issue 6, scenario b): the twin of reference.sh's "scale"
# scenario for nginx-rtmp, with the same input, publisher, delay definition, stepping rule and
# environment, so the two results can be read side by side.
#
# Everything runs on 127.0.0.1 with free ports (loadgen ports) and is stopped at exit:
#   1. builds ./cmd/gopcast (go build -trimpath) and ./cmd/loadgen once;
#   2. generates once (cached, shared with reference.sh and roles.sh) the 720p30 3 Mbit/s H.264
#      High FLV (2 s GOP, B-frames) with AAC 128k (scripts/bench/lib.sh);
#   3. for each N in STEPS, from scratch (new data directories, new ports): MinIO with a bucket
#      made by `loadgen mkbucket`, a `gopcast nats` server, then `gopcast api` (it creates the
#      JetStream assets) and `gopcast ingest`, `transcoder` and `packager`, each its own process
#      with --nats-url, the passthrough profile, and the roles that write media (ingest,
#      transcoder, packager) writing to MinIO with the S3 flags spine.sh uses; or, with ALL=1,
#      one `gopcast all` (embedded NATS, local storage served at /media/, no MinIO);
#   4. loadgen creates N streams through the API (--profile passthrough), publishes the input to
#      each in real time for SECONDS_MEDIA s with its Go RTMP publisher, polls the playlists in
#      the bucket every POLL and waits for every EXT-X-ENDLIST;
#   5. per step: listing delay per rendition (loadgen: median, p95, p99, max; segments expected,
#      listed, lost); per role (nats, api, ingest, transcoder, packager) CPU =
#      utime+stime+cutime+cstime of its process tree (loadgen proctree) read before publishing
#      and after the last playlist ended, per media second per stream and as % of one core per
#      stream; RSS (VmRSS) sampled every second: idle before publishing, peak, and
#      (peak - idle) / N; the whole pipeline (every role + nats) the same way; MinIO apart (not
#      part of the pipeline total: it stands for S3, and it also serves loadgen's polling);
#   6. the stepping stops after the first N with a lost segment, a delay above LATE_S, or a
#      publisher (loadgen) error;
#   7. writes $OUT/results.json, one JSON per step, the logs and $OUT/summary.txt.
#
# The delay is the one spine.sh and reference.sh measure: the time a segment is first seen
# listed in its media playlist minus the wall-clock instant the publisher's media clock reached
# the segment's end (for gopcast read from the source fragment's tfdt + durations; see
# cmd/loadgen). gopcast lists the audio as a rendition of its own, so it has twice as many
# segments (and playlists to poll) per stream as nginx-rtmp's muxed MPEG-TS.
#
# Usage: scripts/bench/scale.sh   (SECONDS_MEDIA=60 and STEPS up to 200: about 12 minutes on an
#                                  idle 2-core machine, plus input generation once)
#        SECONDS_MEDIA=20 STEPS="1 3" QUIET_MAX=0 scripts/bench/scale.sh   # a short smoke run
# Environment:
#   SECONDS_MEDIA (60)  media published per stream; INPUT_SECONDS (SECONDS_MEDIA) length of the
#                       generated input (loadgen loops it)
#   STEPS ("1 10 20 25 50 100 200")  stream counts, in order
#   LATE_S (2)          a step fails when a segment's delay exceeds this
#   POLL (100ms), END_TIMEOUT (60s)  loadgen's --poll and --end-timeout (how long it waits for
#                       EXT-X-ENDLIST after publishing; what is missing then is lost)
#   STAGGER (0)         loadgen's --stagger between stream starts
#   REV                 build gopcast at this git revision (git archive; the checkout is untouched)
#   TRANSCODER_CONCURRENCY  the transcoder's --transcoder-concurrency (default: gopcast's, half
#                       the CPUs: ffmpeg encodes at once; passthrough jobs give their slot back
#                       and run up to 16 per slot)
#   LOG_LEVEL (info)    the roles' --log-level (json logs, kept in $OUT/scale-N.logs/)
#   OUT                 results directory (default: a results/ dir in the temporary work dir, kept)
#   BENCH_CACHE         input cache (default ~/.cache/gopcast-bench)
#   QUIET_CORES, QUIET_MAX  wait before each step until the machine is this idle (0.2 cores over
#                       5 s), at most QUIET_MAX s (600; 0: do not wait)
#   BENCH_NICE          e.g. 10: run MinIO, NATS, the roles and loadgen at that niceness
#   PPROF               e.g. 30: the roles run with --pprof, and a CPU profile of that many
#                       seconds is taken of each (nats, ingest, transcoder, packager) from 10 s
#                       into the publish, saved as $OUT/scale-N.ROLE.pprof (read them with
#                       `go tool pprof -top BINARY FILE`; the binary is $OUT/gopcast)
#   ALL (0)             1: one `gopcast all` process with local storage instead of the roles and
#                       MinIO (the laptop setup; the pipeline is that one process)
#   MINIO, FFMPEG, FFPROBE  binaries; KEEP=1 keeps the work dir (with MinIO's and NATS's data)
set -euo pipefail

cd "$(dirname "$0")/../.."
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh

SECONDS_MEDIA=${SECONDS_MEDIA:-60}
INPUT_SECONDS=${INPUT_SECONDS:-$SECONDS_MEDIA}
STEPS=${STEPS:-1 10 20 25 50 100 200}
LATE_S=${LATE_S:-2}
POLL=${POLL:-100ms}
END_TIMEOUT=${END_TIMEOUT:-60s}
STAGGER=${STAGGER:-0}
LOG_LEVEL=${LOG_LEVEL:-info}
FFMPEG=${FFMPEG:-$(command -v ffmpeg || echo /usr/bin/ffmpeg)}
FFPROBE=${FFPROBE:-$(command -v ffprobe || echo /usr/bin/ffprobe)}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gopcast-bench}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gopcast-scale.XXXXXX")
OUT=${OUT:-$WORK/results}
CLK_TCK=$(getconf CLK_TCK)
NICE=()
[ -z "${BENCH_NICE:-}" ] || NICE=(nice -n "$BENCH_NICE")
ALL=${ALL:-0}
# The processes of the pipeline, in the order they start; MinIO is measured apart.
ROLES=(nats api ingest transcoder packager)
SETUP="separate roles, MinIO"
if [ "$ALL" = 1 ]; then ROLES=(all); SETUP="gopcast all, local storage"; fi

log() { printf 'scale: %s\n' "$*" >&2; }

for tool in "$FFMPEG" "$FFPROBE" jq curl column; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done
[ -x /usr/bin/time ] || { log "GNU time (/usr/bin/time) is required (apt-get install time)"; exit 1; }
[ "$ALL" = 1 ] || MINIO_BIN=$(find_minio)
mkdir -p "$OUT" "$BENCH_CACHE" "$WORK/bin"

# --- everything started here is stopped at exit --------------------------------------------------
stop_at_exit



# --- 1. build ------------------------------------------------------------------------------------
if [ -n "${REV:-}" ]; then
  # Measure a committed revision (e.g. before an optimisation): its tree, exported without
  # touching the checkout; its --transcoder-concurrency semantics are its own.
  GOPCAST_VERSION=$(git rev-parse --short "$REV^{commit}")
  log "building ./cmd/gopcast at $REV ($GOPCAST_VERSION) and ./cmd/loadgen from the working tree"
  mkdir -p "$WORK/src"
  git archive "$REV" | tar -x -C "$WORK/src"
  (cd "$WORK/src" && go build -trimpath -o "$WORK/bin/gopcast" ./cmd/gopcast)
else
  GOPCAST_VERSION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')
  log "building ./cmd/gopcast ($GOPCAST_VERSION) and ./cmd/loadgen"
  go build -trimpath -o "$WORK/bin/gopcast" ./cmd/gopcast
fi
go build -o "$WORK/bin/loadgen" ./cmd/loadgen
GOPCAST=$WORK/bin/gopcast
LOADGEN=$WORK/bin/loadgen
if [ -n "${PPROF:-}" ]; then cp "$GOPCAST" "$OUT/gopcast"; fi

# --- 2. input (cached) ---------------------------------------------------------------------------
IN720=$(bench_input roles-720p30-3M-aac 720 3M "$INPUT_SECONDS")

# --- 3. one step: MinIO, NATS and the roles, fresh -------------------------------------------------
declare -A ROLE_PID ROLE_HTTP
MINIO_PID=""

# start_role ROLE HTTP_PORT [flags...]: starts `gopcast ROLE` with its own data dir and logs.
start_role() {
  local role=$1 port=$2; shift 2
  "${NICE[@]}" "$GOPCAST" "$role" --http-addr "127.0.0.1:$port" --data-dir "$STEP_DIR/data-$role" \
    --log-format json --log-level "$LOG_LEVEL" ${PPROF:+--pprof} "$@" >"$STEP_LOGS/$role.out" 2>"$STEP_LOGS/$role.log" &
  ROLE_PID[$role]=$!
  ROLE_HTTP[$role]=$port
  PIDS+=("$!")
}

# ready ROLE...: waits for each role's /readyz (60 s), failing at once if the process is gone.
ready() {
  local role i
  for role in "$@"; do
    for i in $(seq 600); do
      curl -fsS -o /dev/null "http://127.0.0.1:${ROLE_HTTP[$role]}/readyz" 2>/dev/null && continue 2
      kill -0 "${ROLE_PID[$role]}" 2>/dev/null || break
      sleep 0.1
    done
    log "$STEP_NAME: gopcast $role did not get ready:"
    tail -5 "$STEP_LOGS/$role.log" >&2 || true
    return 1
  done
}

# start_all NAME: one `gopcast all` with local storage.
start_all() {
  STEP_NAME=$1 STEP_DIR=$WORK/$1 STEP_LOGS=$OUT/$1.logs
  mkdir -p "$STEP_DIR" "$STEP_LOGS"
  local p
  mapfile -t p < <("$LOADGEN" ports 2)
  TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  RTMP_PORT=${p[1]}
  start_role all "${p[0]}" --api-token "$TOKEN" --profile passthrough --rtmp-addr "127.0.0.1:$RTMP_PORT" \
    --rtmp-public-url "rtmp://127.0.0.1:$RTMP_PORT/live" \
    ${TRANSCODER_CONCURRENCY:+--transcoder-concurrency "$TRANSCODER_CONCURRENCY"}
  ROLE_HTTP[api]=${p[0]}
  ready all || return 1
  log "$STEP_NAME: gopcast all ${ROLE_PID[all]} (local storage)"
}

# start_step NAME: MinIO with a bucket, gopcast nats, api, then ingest, transcoder and packager.
start_step() {
  [ "$ALL" != 1 ] || { start_all "$1"; return; }
  STEP_NAME=$1 STEP_DIR=$WORK/$1 STEP_LOGS=$OUT/$1.logs
  mkdir -p "$STEP_DIR/minio" "$STEP_DIR/minio-certs" "$STEP_LOGS"
  local p unset_env=() v
  mapfile -t p < <("$LOADGEN" ports 9)
  S3_ENDPOINT=http://127.0.0.1:${p[0]}
  S3_BUCKET=gopcast-bench
  S3_ACCESS=gopcast-bench
  S3_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  RTMP_PORT=${p[8]}
  for v in $(env | grep -o '^MINIO_[A-Z_]*' || true); do unset_env+=(-u "$v"); done
  "${NICE[@]}" env "${unset_env[@]}" \
    MINIO_ROOT_USER="$S3_ACCESS" MINIO_ROOT_PASSWORD="$S3_SECRET" MINIO_UPDATE=off MINIO_CI_CD=1 \
    "$MINIO_BIN" server "$STEP_DIR/minio" --address "127.0.0.1:${p[0]}" \
    --console-address "127.0.0.1:${p[1]}" --certs-dir "$STEP_DIR/minio-certs" >"$STEP_LOGS/minio.log" 2>&1 &
  MINIO_PID=$!
  PIDS+=("$MINIO_PID")
  wait_http "$S3_ENDPOINT/minio/health/live" 60 || return 1
  "$LOADGEN" mkbucket --endpoint "$S3_ENDPOINT" --bucket "$S3_BUCKET" --access-key "$S3_ACCESS" \
    --secret-key "$S3_SECRET" || return 1

  local nats_url=nats://127.0.0.1:${p[2]}
  start_role nats "${p[3]}" --nats-listen "127.0.0.1:${p[2]}"
  ready nats || return 1
  # The api creates the JetStream assets first; the other roles then start together.
  start_role api "${p[4]}" --nats-url "$nats_url" --api-token "$TOKEN" --profile passthrough \
    --public-base-url "$S3_ENDPOINT/$S3_BUCKET" --rtmp-public-url "rtmp://127.0.0.1:$RTMP_PORT/live"
  ready api || return 1
  # The roles that write media: the ingest (source and audio), transcoders (rungs), packagers.
  local s3=(--s3-endpoint "$S3_ENDPOINT" --s3-bucket "$S3_BUCKET" --s3-region us-east-1
    --s3-access-key "$S3_ACCESS" --s3-secret-key "$S3_SECRET")
  start_role ingest "${p[5]}" --nats-url "$nats_url" --rtmp-addr "127.0.0.1:$RTMP_PORT" --profile passthrough "${s3[@]}"
  start_role transcoder "${p[6]}" --nats-url "$nats_url" --profile passthrough --ffmpeg "$FFMPEG" "${s3[@]}" \
    ${TRANSCODER_CONCURRENCY:+--transcoder-concurrency "$TRANSCODER_CONCURRENCY"}
  start_role packager "${p[7]}" --nats-url "$nats_url" --ffmpeg "$FFMPEG" "${s3[@]}"
  ready ingest transcoder packager || return 1
  log "$STEP_NAME: minio $MINIO_PID, nats ${ROLE_PID[nats]}, api ${ROLE_PID[api]}, ingest ${ROLE_PID[ingest]}, transcoder ${ROLE_PID[transcoder]}, packager ${ROLE_PID[packager]}"
}

# stop_step: stops the roles (last started first), NATS and MinIO; drops the step's data.
stop_step() {
  local i role
  for ((i = ${#ROLES[@]} - 1; i >= 0; i--)); do
    role=${ROLES[$i]}
    [ -n "${ROLE_PID[$role]:-}" ] || continue
    stop_tree "${ROLE_PID[$role]}"
    forget "${ROLE_PID[$role]}"
  done
  if [ -n "$MINIO_PID" ]; then stop_tree "$MINIO_PID"; forget "$MINIO_PID"; fi
  ROLE_PID=() ROLE_HTTP=() MINIO_PID=""
  [ "${KEEP:-0}" = 1 ] || rm -rf "$STEP_DIR"
}

# pids_of WHAT: the root PIDs of a role, of the whole pipeline (every role), or of minio.
pids_of() {
  case "$1" in
    pipeline) local r; for r in "${ROLES[@]}"; do echo "${ROLE_PID[$r]}"; done ;;
    minio) echo "$MINIO_PID" ;;
    *) echo "${ROLE_PID[$1]}" ;;
  esac
}
MEASURED=("${ROLES[@]}" pipeline)
[ "$ALL" = 1 ] || MEASURED+=(minio)

# readings FILE: one line per measured thing: NAME cpu_s rss_kb processes (loadgen proctree;
# "0 0 0" for a process that is gone: the step then fails).
readings() {
  local w v
  for w in "${MEASURED[@]}"; do
    # shellcheck disable=SC2046 # one argument per PID
    v=$("$LOADGEN" proctree --clk-tck "$CLK_TCK" $(pids_of "$w") 2>/dev/null) || v="0 0 0"
    echo "$w $v"
  done >"$1"
}

# run_step N: starts everything, publishes N streams, measures, stops, writes $OUT/scale-N.json.
run_step() {
  local n=$1 name=scale-$1
  quiet_wait
  if ! start_step "$name"; then
    stop_step
    return 1
  fi
  local w samplers=() b0 b1 rc=0 s
  readings "$OUT/$name.idle"
  for w in "${MEASURED[@]}"; do
    : >"$OUT/$name.rss-$w"
    # shellcheck disable=SC2046 # one argument per PID
    "$LOADGEN" proctree --clk-tck "$CLK_TCK" --every 1s --out "$OUT/$name.rss-$w" $(pids_of "$w") &
    samplers+=("$!")
    PIDS+=("$!")
  done
  readings "$OUT/$name.before"
  b0=$(busy_ticks)
  log "$name: publishing ${SECONDS_MEDIA} s x $n stream(s) of $(basename "$IN720") through gopcast (passthrough)"
  if [ -n "${PPROF:-}" ]; then
    local profiled=(nats ingest transcoder packager)
    [ "$ALL" != 1 ] || profiled=(all)
    for w in "${profiled[@]}"; do
      (sleep 10; curl -sf -o "$OUT/$name.$w.pprof" \
        "http://127.0.0.1:${ROLE_HTTP[$w]}/debug/pprof/profile?seconds=$PPROF" || log "$name: no profile of $w") &
      samplers+=("$!")
      PIDS+=("$!")
    done
  fi
  supervise "${NICE[@]}" /usr/bin/time -f '%e %U %S' -o "$OUT/$name.loadgen.time" \
    "$LOADGEN" run --api "http://127.0.0.1:${ROLE_HTTP[api]}" --token "$TOKEN" --input "$IN720" \
    --streams "$n" --duration "${SECONDS_MEDIA}s" --profile passthrough \
    --poll "$POLL" --end-timeout "$END_TIMEOUT" --stagger "$STAGGER" \
    --json "$OUT/$name.loadgen.json" >"$OUT/$name.loadgen.txt" 2>"$OUT/$name.loadgen.err" || rc=$?
  readings "$OUT/$name.after"
  b1=$(busy_ticks)
  local died=()
  for w in "${ROLES[@]}" ${MINIO_PID:+minio}; do
    # shellcheck disable=SC2046 # one argument per PID
    kill -0 $(pids_of "$w") 2>/dev/null || died+=("$w")
  done
  [ ${#died[@]} -eq 0 ] || log "$name: exited during the run: ${died[*]} (see $STEP_LOGS)"
  for s in "${samplers[@]}"; do stop_tree "$s"; forget "$s"; done
  stop_step
  sed -n '/^ *rendition/,/^ *all /p' "$OUT/$name.loadgen.txt" >&2
  [ $rc -eq 0 ] || { log "$name: loadgen exited $rc:"; tail -5 "$OUT/$name.loadgen.err" >&2; }
  [ -s "$OUT/$name.loadgen.json" ] || { log "$name: no loadgen results"; return 1; }
  # Peak RSS of each measured thing: the samples and the reading after the run.
  for w in "${MEASURED[@]}"; do
    awk -v w="$w" -v after="$(awk -v w="$w" '$1 == w {print $3}' "$OUT/$name.after")" \
      'BEGIN {m = after + 0} $3 > m {m = $3} END {print w, m}' "$OUT/$name.rss-$w"
  done >"$OUT/$name.peak"
  jq -n --arg name "$name" --arg input "$(basename "$IN720")" --argjson streams "$n" --argjson rc "$rc" \
    --rawfile idle "$OUT/$name.idle" --rawfile before "$OUT/$name.before" --rawfile after "$OUT/$name.after" \
    --rawfile peak "$OUT/$name.peak" --rawfile lt "$OUT/$name.loadgen.time" \
    --argjson busy "$(awk -v d=$((b1 - b0)) -v t="$CLK_TCK" 'BEGIN {print d / t}')" \
    --arg roles "${ROLES[*]}" --arg died "${died[*]}" --arg setup "$SETUP" \
    --argjson late "$LATE_S" --arg conc "${TRANSCODER_CONCURRENCY:-}" --slurpfile lg "$OUT/$name.loadgen.json" '
    def r3: . * 1000 | round / 1000;
    def r6: . * 1000000 | round / 1000000;
    def tab(s): s | split("\n") | map(select(length > 0) | split(" ") | {key: .[0], value: (.[1:] | map(tonumber))}) | from_entries;
    (tab($idle)) as $i | (tab($before)) as $b | (tab($after)) as $a | (tab($peak)) as $p |
    ($lt | split("\n") | map(select(length > 0)) | last | split(" ") | map(tonumber)) as $t |
    ($lg[0]) as $l | ($l.media_seconds_per_stream * $l.streams) as $media |
    # what($k): CPU over the run: in all, per media second per stream (= cores per stream), as
    # % of one core per stream, and per media second for all N streams (= cores in use); RSS
    # (kB in, MB out): idle before publishing, peak, (peak - idle) / N.
    def what($k): if $a[$k] == null then null else ($a[$k][0] - $b[$k][0]) as $cpu |
      {cpu_s: ($cpu | r3), cpu_per_media_s: ($cpu / $media | r6),
       cores_all_streams: ($cpu / $l.media_seconds_per_stream | r3),
       pct_core_per_stream: ($cpu / $media * 100 | r3),
       rss_idle_mb: ($i[$k][1] / 1024 | r3), rss_peak_mb: ($p[$k][0] / 1024 | r3),
       rss_per_stream_mb: (($p[$k][0] - $i[$k][1]) / 1024 / $streams | r3), processes_at_end: $a[$k][2]} end;
    ($a.pipeline[0] - $b.pipeline[0]) as $pcpu | ((($a.minio // [0])[0]) - (($b.minio // [0])[0])) as $mcpu |
    {name: $name, server: "gopcast", mode: "passthrough", setup: $setup, input: $input, streams: $streams, loadgen_exit: $rc,
     transcoder_concurrency: (if $conc == "" then "default (half the CPUs)" else ($conc | tonumber) end),
     media_seconds: $media, wall_s: $t[0],
     roles: ($roles | split(" ") | map({key: ., value: what(.)}) | from_entries),
     died: ($died | split(" ") | map(select(length > 0))),
     pipeline: what("pipeline"),
     minio: what("minio"),
     loadgen_cpu_s: (($t[1] + $t[2]) | r3),
     others_cores: ((($busy - $pcpu - $mcpu - $t[1] - $t[2]) / $t[0]) | r3),
     max_write_lag_ms: ([$l.per_stream[].publisher.max_write_lag_ms] | max | r3),
     errors: [$l.per_stream[] | select(.error != null) | "stream \(.index): \(.error)"],
     warnings: [$l.per_stream[] | select(.warning != null) | "stream \(.index): \(.warning)"],
     renditions: [($l.renditions + [$l.overall])[] | {name, expected: .segments_expected, listed: .segments_listed,
       lost, gaps, median_s: (.delay_s.median | r3), p95_s: (.delay_s.p95 | r3),
       p99_s: (.delay_s.p99 | r3), max_s: (.delay_s.max | r3)}],
     timeline: $l.timeline_check,
     fail_reasons: ([if $rc != 0 then "loadgen exited \($rc)" else empty end,
       if $died != "" then "exited during the run: \($died)" else empty end,
       if $l.overall.lost > 0 then "\($l.overall.lost) segment(s) lost" else empty end,
       if $l.overall.delay_s.max > $late then "max delay \($l.overall.delay_s.max | r3) s > \($late) s" else empty end,
       if $l.overall.segments_listed == 0 then "nothing listed" else empty end])} |
    .ok = (.fail_reasons | length == 0)' \
    >"$OUT/$name.json"
  jq -r '"\(.name): pipeline CPU \(.pipeline.cpu_s) s for \(.media_seconds) media s = \(.pipeline.pct_core_per_stream) % of a core per stream (ingest \(.roles.ingest.pct_core_per_stream // "-") %); MinIO \(.minio.cpu_s // "-") s apart; pipeline RSS idle \(.pipeline.rss_idle_mb) MB, peak \(.pipeline.rss_peak_mb) MB, (peak - idle) per stream \(.pipeline.rss_per_stream_mb) MB; others used \(.others_cores) cores"' "$OUT/$name.json" >&2
}

# --- 4. N x 720p passthrough, stepping N -----------------------------------------------------------
SCALE_RUNS=()
for n in $STEPS; do
  run_step "$n" || true
  [ -f "$OUT/scale-$n.json" ] || { log "step $n gave no results; stopping"; break; }
  SCALE_RUNS+=("scale-$n")
  if [ "$(jq .ok "$OUT/scale-$n.json")" != true ]; then
    log "stopping at $n streams: $(jq -r '.fail_reasons | join("; ")' "$OUT/scale-$n.json")"
    break
  fi
done

# --- 5. results ------------------------------------------------------------------------------------
{
  echo '[]'
  for run in "${SCALE_RUNS[@]}"; do jq -s . "$OUT/$run.json"; done
} | jq -s 'add' >"$OUT/scale.json"
jq -n --arg when "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --arg machine "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  --arg ffmpeg "$("$FFMPEG" -version | head -1 | cut -d' ' -f1-3)" --arg go "$(go version | cut -d' ' -f3-4)" \
  --arg git "$GOPCAST_VERSION" --arg nice "${BENCH_NICE:-}" --argjson late "$LATE_S" --arg steps "$STEPS" \
  --arg poll "$POLL" --slurpfile scale "$OUT/scale.json" '
  {when: $when, machine: $machine, ffmpeg: $ffmpeg, go: $go, git: $git,
   nice: (if $nice == "" then null else ($nice | tonumber) end), late_s: $late, steps: $steps, poll: $poll,
   scale: $scale[0],
   scale_max_ok_streams: ([$scale[0][] | select(.ok) | .streams] | max)}' >"$OUT/results.json"
rm -f "$OUT/scale.json"

{
  echo "gopcast scale: N passthrough streams, $SETUP ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  jq -r '"machine: \(.machine); \(.ffmpeg); \(.go); gopcast \(.git)" +
    (if .nice != null then "; MinIO, NATS, roles and loadgen at nice \(.nice)" else "" end)' "$OUT/results.json"
  for run in "${SCALE_RUNS[@]}"; do
    f=$OUT/$run.json
    echo
    jq -r '"== \(.name): \(.streams) x \(.input), passthrough, transcoder concurrency \(.transcoder_concurrency) ==" +
      (if .ok then "" else "\nSTEP FAILED: " + (.fail_reasons | join("; ")) end) +
      (if .loadgen_exit != 0 then "\nWARNING: loadgen exited \(.loadgen_exit): " + (.errors | join("; ")) else "" end) +
      (if (.warnings | length) > 0 then "\nnote: " + (.warnings | join("; ")) else "" end)' "$f"
    jq -r '"rendition expected listed lost median_s p95_s p99_s max_s",
      (.renditions[] | "\(.name) \(.expected) \(.listed) \(.lost) \(.median_s) \(.p95_s) \(.p99_s) \(.max_s)")' "$f" |
      column -t -R 2,3,4,5,6,7,8 | sed 's/^/  /'
    jq -r '"process cpu_s cpu_s/media_s %core/stream rss_idle_mb rss_peak_mb rss/stream_mb",
      ((.roles | to_entries[]) , {key: "pipeline", value: .pipeline}, (if .minio != null then {key: "minio(apart)", value: .minio} else empty end) |
        "\(.key) \(.value.cpu_s) \(.value.cpu_per_media_s) \(.value.pct_core_per_stream) \(.value.rss_idle_mb) \(.value.rss_peak_mb) \(.value.rss_per_stream_mb)")' "$f" |
      column -t -R 2,3,4,5,6,7 | sed 's/^/  /'
    jq -r '"loadgen \(.loadgen_cpu_s) CPU-s (not counted); other processes \(.others_cores) cores on average; publisher max write lag \(.max_write_lag_ms) ms; wall \(.wall_s) s",
      "timeline check: \(.timeline.ref_fragments_read) source fragments read (\(.timeline.ref_fragment_errors) errors), |fragment start - publisher chunk start| <= \(.timeline.max_frag_start_vs_publisher_chunk_ms * 10 | round / 10) ms, \(.timeline.negative_delays) negative delays"' "$f" |
      sed 's/^/  /'
  done
  jq -r '"\nscale: largest N with nothing lost or later than \(.late_s) s: \(.scale_max_ok_streams // "none") (steps \(.steps))"' "$OUT/results.json"
} | tee "$OUT/summary.txt"
log "results in $OUT"
