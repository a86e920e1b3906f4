#!/usr/bin/env bash
# The main job on embedded defaults, no AWS account needed: a nagare-aggregator and a
# nagare-forwarder on loopback, running examples/forwarder-s3.conf and examples/aggregator.conf;
# the sample Docker traffic (../shared/corpus/sample.jsonl, 2,077 records as Docker's fluentd
# driver sends them) is replayed into the forwarder. S3 is the embedded on-disk store
# (s3_endpoint file://...), the aggregator writes its CloudWatch stand-in files. Prints where
# everything went, then stops both processes with SIGTERM.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CORPUS="${NAGARE_CORPUS:-../shared/corpus/sample.jsonl}"
[ -f "$CORPUS" ] || { echo "no corpus at $CORPUS (set NAGARE_CORPUS)" >&2; exit 1; }

echo "== building (first time: a few minutes)"
cargo build -q -p nagare-forwarder -p nagare-aggregator -p nagare-loadgen
BIN=target/debug
W="$(mktemp -d "${TMPDIR:-/tmp}/nagare-demo.XXXXXX")"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

port_of() { # ready-file -> port of the first input
    for _ in $(seq 1 300); do
        [ -s "$1" ] && break
        sleep 0.1
    done
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["inputs"][0]["addr"].rsplit(":",1)[1])' "$1"
}

echo "== starting nagare-aggregator (examples/aggregator.conf)"
NAGARE_BIND=127.0.0.1 NAGARE_PORT=0 NAGARE_DATA_DIR="$W/aggregator" NAGARE_HOSTNAME=aggregator-1 \
    "$BIN/nagare-aggregator" -c examples/aggregator.conf --ready-file "$W/aggregator.ready" \
    --log-format text >"$W/aggregator.log" 2>&1 &
pids+=($!)
AP="$(port_of "$W/aggregator.ready")"

echo "== starting nagare-forwarder (examples/forwarder-s3.conf, S3 = embedded store)"
mkdir -p "$W/s3/nagare-logs"
NAGARE_BIND=127.0.0.1 NAGARE_PORT=0 NAGARE_DATA_DIR="$W/forwarder" NAGARE_HOSTNAME=forwarder-1 \
    NAGARE_S3_ENDPOINT="file://$W/s3" NAGARE_AGGREGATOR_HOST=127.0.0.1 NAGARE_AGGREGATOR_PORT="$AP" \
    "$BIN/nagare-forwarder" -c examples/forwarder-s3.conf --ready-file "$W/forwarder.ready" \
    --log-format text >"$W/forwarder.log" 2>&1 &
pids+=($!)
FP="$(port_of "$W/forwarder.ready")"

echo "== replaying $CORPUS into the forwarder (Message mode, one record per message, with acks)"
"$BIN/nagare-loadgen" --addr "127.0.0.1:$FP" --corpus "$CORPUS" --mode message --tag-per-record --ack --window 1 \
    --events "$(wc -l <"$CORPUS")"

echo "== SIGTERM to the forwarder (it drains to S3 and the aggregator), then to the aggregator"
sleep 2
kill -TERM "${pids[1]}"; wait "${pids[1]}" || true
kill -TERM "${pids[0]}"; wait "${pids[0]}" || true
pids=()

echo
echo "== S3 (embedded store at $W/s3): objects and lines"
objects=0; s3_lines=0
while IFS= read -r f; do
    n=$(gzip -dc "$f" | wc -l); objects=$((objects + 1)); s3_lines=$((s3_lines + n))
    [ "$objects" -le 12 ] && printf '  %-78s %5d lines\n' "${f#"$W/s3/"}" "$n"
done < <(find "$W/s3" -type f -name '*.gz' | sort)
[ "$objects" -gt 12 ] && echo "  ... and $((objects - 12)) more objects"
echo "  $objects objects, $s3_lines lines (the corpus has 2,000 lines; 304 health checks are dropped by the config)"

echo
echo "== CloudWatch Logs stand-in (aggregator, one stream per service and host)"
cw_lines=0
while IFS= read -r f; do
    n=$(wc -l <"$f"); cw_lines=$((cw_lines + n))
    printf '  group %-10s stream %-14s %5d events\n' "$(basename "$(dirname "$f")")" "$(basename "$f" .jsonl)" "$n"
done < <(find "$W/aggregator/cloudwatch" -type f | sort)
echo "  $cw_lines error/fatal events (the corpus has 99)"
echo
echo "Logs and data are in $W"
