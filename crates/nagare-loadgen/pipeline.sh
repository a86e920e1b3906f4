#!/usr/bin/env bash
# The forwarder example pipeline under a burst: examples/forwarder.conf as written (forward in ->
# concat -> parser -> grep -> rewrite_tag_filter -> copy -> gzipped JSON lines in the S3 layout
# (the embedded on-disk store, in a temporary directory) + out_forward to an aggregator), with
# the corpus replayed by nagare-loadgen.
#
#   crates/nagare-loadgen/pipeline.sh [LEVEL ...]      (default: 6 1)
#
# For each gzip level (written into the S3 store as `compression_level`), RUNS times (default
# 3): start a receiving nagare-aggregator (in_forward -> null; its CPU is not counted), start
# nagare-forwarder, send EVENTS (default 2,000,000) corpus records in MODE (default `message`,
# the Docker driver's shape: one [tag, time, record, {chunk}] per record, acked, WINDOW 64
# unacknowledged per connection, CONNECTIONS 4), then SIGTERM the forwarder and wait until it
# has flushed everything (S3 objects written, forward buffer drained), and report the
# forwarder's whole CPU time (utime+stime of the process, from start to exit, so the final
# flushes count), CPU seconds per million events, its peak RSS (VmHWM), the bytes it sent to
# the disk, the S3 objects and lines written and the events the aggregator received. Prints
# one JSON line per run and the medians per level. RATE=N replaces the burst by a sustained
# N events/s. Binaries: target/release (built first unless NO_BUILD is set). PERF=FILE
# records a perf profile of the forwarder for the whole run (PERF_OPTS, default -g; e.g.
# "--call-graph dwarf" where frame pointers are missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
LEVELS=("${@:-6}")
[ $# -eq 0 ] && LEVELS=(6 1)
RUNS=${RUNS:-3}
EVENTS=${EVENTS:-2000000}
MODE=${MODE:-message}
WINDOW=${WINDOW:-64}
CONNECTIONS=${CONNECTIONS:-4}
# TAGS=per_record (default): every message carries its record's tag, as from a relay
# multiplexing containers; TAGS=per_connection: one tag per connection, as Docker's driver
# (one connection per container).
TAGS=${TAGS:-per_record}
# RATE=N: sustained load at N events/s in all instead of a burst as fast as acks allow.
RATE_ARGS=()
[ -z "${RATE:-}" ] || RATE_ARGS=(--rate "$RATE")
TAG_ARGS=--tag-per-record
[ "$TAGS" = per_record ] || TAG_ARGS=
CONFIG=${CONFIG:-examples/forwarder.conf}
SAMPLE=${SAMPLE:-../shared/corpus/sample.jsonl}
[ -n "${NO_BUILD:-}" ] || cargo build -q --release -p nagare-forwarder -p nagare-aggregator -p nagare-loadgen
BIN=target/release
FORWARDER=${FORWARDER:-$BIN/nagare-forwarder}
work=$(mktemp -d "${TMPDIR:-/tmp}/nagare-pipeline.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# The burst is Docker-style events of the size the CPU budget in shared/design.md is written
# for: the corpus without its 54 split audit lines (131 pieces of 16 KiB, a third of its bytes):
# 1,946 records, 454 bytes of msgpack on average. CORPUS=FILE replays another file (e.g. the
# whole sample, whose records average 1.2 KB).
if [ -z "${CORPUS:-}" ]; then
    CORPUS="$work/typical.jsonl"
    grep -v '"partial_message"' "$SAMPLE" >"$CORPUS"
fi

addr_of() { # ready-file -> host:port of the first input
    for _ in $(seq 300); do [ -s "$1" ] && break; sleep 0.1; done
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["inputs"][0]["addr"])' "$1"
}

results="$work/results.jsonl"
: >"$results"
for level in "${LEVELS[@]}"; do
    for run in $(seq "$RUNS"); do
        d="$work/run-$level-$run"
        mkdir -p "$d/s3/nagare-logs" "$d/data"
        cat >"$d/agg.conf" <<CONF
<source>
  @type forward
  bind 127.0.0.1
  port 0
</source>
<match **>
  @type null
  @id received
</match>
<system>
  admin_bind 127.0.0.1
  admin_port 0
</system>
CONF
        "$BIN/nagare-aggregator" -c "$d/agg.conf" --ready-file "$d/agg.ready" --log-level warn \
            2>"$d/agg.log" &
        agg=$!
        pids+=("$agg")
        agg_addr=$(addr_of "$d/agg.ready")
        # The example as written, with the gzip level set on the S3 store.
        awk -v lvl="$level" '
            /^[[:space:]]*compression_level[[:space:]]/ && in_s3 { next }
            { print }
            /^[[:space:]]*@type[[:space:]]+s3[[:space:]]*$/ { print "      compression_level " lvl; in_s3 = 1 }
            /<\/store>/ { in_s3 = 0 }
        ' "$CONFIG" >"$d/forwarder.conf"
        NAGARE_BIND=127.0.0.1 NAGARE_PORT=0 NAGARE_DATA_DIR="$d/data" NAGARE_HOSTNAME=bench-host \
            NAGARE_S3_ENDPOINT="file://$d/s3" NAGARE_AGGREGATOR_HOST=127.0.0.1 \
            NAGARE_AGGREGATOR_PORT="${agg_addr##*:}" \
            "$FORWARDER" -c "$d/forwarder.conf" --ready-file "$d/fwd.ready" \
            --log-level warn 2>"$d/fwd.log" &
        fwd=$!
        pids+=("$fwd")
        fwd_addr=$(addr_of "$d/fwd.ready")
        # PERF=FILE: profile the forwarder (perf record -g) for the whole burst and drain.
        perf_pid=""
        if [ -n "${PERF:-}" ]; then
            perf record -q ${PERF_OPTS:--g} -o "$PERF" -p "$fwd" 2>/dev/null &
            perf_pid=$!
        fi
        "$BIN/nagare-loadgen" --addr "$fwd_addr" --corpus "$CORPUS" --mode "$MODE" \
            $TAG_ARGS "${RATE_ARGS[@]}" --ack --window "$WINDOW" --connections "$CONNECTIONS" \
            --events "$EVENTS" --timeout 120 >"$d/loadgen.json"
        # The whole process: sample CPU and RSS just before it exits (after the drain).
        kill -TERM "$fwd"
        stat_line="" hwm=0 wbytes=0
        while kill -0 "$fwd" 2>/dev/null; do
            s=$(cat "/proc/$fwd/stat" 2>/dev/null) || break
            h=$(awk '/VmHWM/ {print $2}' "/proc/$fwd/status" 2>/dev/null) || break
            # Dirtied minus cancelled (pages of deleted files dropped before writeback).
            w=$(awk '/^write_bytes/ {w = $2} /^cancelled_write_bytes/ {c = $2} END {print w - c}' \
                "/proc/$fwd/io" 2>/dev/null) || break
            [ -n "$s" ] && stat_line=$s
            [ -n "$h" ] && hwm=$h
            [ -n "$w" ] && wbytes=$w
            sleep 0.05
        done
        wait "$fwd" 2>/dev/null || true
        [ -z "$perf_pid" ] || wait "$perf_pid" 2>/dev/null || true
        received=$(curl -s "http://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("admin",""))' "$d/agg.ready")/metrics" 2>/dev/null |
            awk '/^nagare_output_records_written_total\{.*plugin_id="received"/ {print $2}')
        kill -TERM "$agg"; wait "$agg" 2>/dev/null || true
        objects=0 lines=0
        while IFS= read -r f; do
            objects=$((objects + 1))
            lines=$((lines + $(gzip -dc "$f" | wc -l)))
        done < <(find "$d/s3" -type f -name '*.gz')
        python3 - "$d/loadgen.json" "$stat_line" "$hwm" "$(getconf CLK_TCK)" "$level" "$run" \
            "$objects" "$lines" "${received:-0}" "$wbytes" >>"$results" <<'PY'
import json, sys
out, stat, hwm, tck, level, run, objects, lines, received, wbytes = sys.argv[1:]
r = json.loads(open(out).read().strip().splitlines()[-1])
# /proc/PID/stat: fields after the ")" of the command name; utime and stime are 14 and 15.
f = stat.rsplit(")", 1)[1].split()
cpu = (int(f[11]) + int(f[12])) / int(tck)
print(json.dumps({
    "level": int(level), "run": int(run), "events": r["events"], "mode": r.get("mode"),
    "send_seconds": r["seconds"], "events_per_sec": r["events_per_sec"],
    "forwarder_cpu_seconds": round(cpu, 2),
    "user_seconds": round(int(f[11]) / int(tck), 2), "system_seconds": round(int(f[12]) / int(tck), 2),
    "cpu_seconds_per_million": round(cpu * 1e6 / r["events"], 3),
    "peak_rss_mb": round(int(hwm) / 1024, 1),
    # Bytes this process sent to the disk (/proc/PID/io: write_bytes less
    # cancelled_write_bytes): buffer chunks synced or written back before they were deleted,
    # and the S3 objects.
    "disk_write_mb": round(int(wbytes) / 1e6, 1),
    "s3_objects": int(objects), "s3_lines": int(lines), "forwarded": int(float(received or 0)),
}))
PY
        tail -1 "$results"
        pids=()
    done
done
echo "== medians (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for level in sorted({r["level"] for r in rows}, reverse=True):
    rs = [r for r in rows if r["level"] == level]
    med = lambda k: statistics.median(r[k] for r in rs)
    print(json.dumps({"level": level, "runs": len(rs),
        "cpu_seconds_per_million": med("cpu_seconds_per_million"),
        "peak_rss_mb": med("peak_rss_mb"), "events_per_sec": med("events_per_sec"),
        "s3_lines": med("s3_lines"), "forwarded": med("forwarded")}))
PY
