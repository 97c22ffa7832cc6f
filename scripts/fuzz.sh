#!/usr/bin/env bash
# Runs every fuzz target of gopcast's network-input parsers for FUZZTIME each (default 10m),
# one after the other, and prints one line per target: executions, new corpus entries, result.
# A crash leaves its input under the package's testdata/fuzz/FUZZNAME/ (commit it: it becomes a
# regression test that `go test ./...` runs).
#
# Usage: scripts/fuzz.sh [TARGET_REGEX]     (FUZZTIME=10m, FUZZ_PARALLEL=GOMAXPROCS)
set -u
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10m}
filter=${1:-.}
targets=(
  "./services/ingest FuzzRTMPConnection"   # RTMP handshake, chunk stream, AMF0 commands, FLV tags
  "./pkg/queue FuzzChunkMessage"           # chunk job messages from JetStream
  "./pkg/queue FuzzSegmentMessage"         # segment job messages from JetStream
  "./pkg/queue FuzzAttachedMessage"        # job messages carrying their media after the JSON
  "./pkg/queue FuzzLiveParts"              # live chunk parts and end messages (core NATS)
  "./services/api FuzzRequestDecoding"     # API JSON bodies
  "./pkg/media/codec FuzzH264"             # SPS/PPS (AVC decoder configuration)
  "./pkg/media/codec FuzzAAC"              # AudioSpecificConfig
  "./pkg/media/cmaf FuzzDemux"             # MPEG-TS chunks
  "./pkg/media/tsedit FuzzShift"           # MPEG-TS chunks and ffmpeg output edited by encoder chains
  "./pkg/media/cmaf FuzzInit"              # codec configuration to init segments
)
par=()
[ -n "${FUZZ_PARALLEL:-}" ] && par=(-parallel "$FUZZ_PARALLEL")
status=0
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  [[ "$name" =~ $filter ]] || continue
  log=$(mktemp)
  go test -timeout 0 -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "${par[@]}" "$pkg" >"$log" 2>&1
  rc=$?
  last=$(grep -E '^fuzz: elapsed' "$log" | tail -1)
  if [ $rc -eq 0 ]; then result=ok; else result=FAIL; status=1; fi
  printf '%-22s %-20s %s  %s\n' "$name" "$pkg" "$result" "${last#fuzz: }"
  [ $rc -eq 0 ] || sed -n '1,60p' "$log"
  rm -f "$log"
done
exit $status
