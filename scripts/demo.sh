#!/usr/bin/env bash
# The seed architecture on loopback, no AWS account needed: a nagare-aggregator and a
# nagare-forwarder running examples/aggregator.conf and examples/forwarder.conf as written
# (only their environment knobs set); the sample Docker traffic (../shared/corpus/sample.jsonl,
# 2,077 records as Docker's fluentd driver sends them) is replayed into the forwarder.
#
#   S3:         the embedded on-disk store (NAGARE_S3_ENDPOINT=file://...): the real output,
#               the same keys, as files.
#   CloudWatch: moto (NAGARE_MOTO_ENDPOINT, or moto_server from .ci/venv, which
#               .ci/install-deps.sh creates) behind the real cloudwatch_logs output. Without
#               moto, the aggregator's CloudWatch <match> is swapped for JSON-lines files, one
#               per log group and stream (said loudly below).
#
# The corpus' times are moved to a day ago (CloudWatch refuses events older than 14 days).
# Prints where everything went, then stops both processes with SIGTERM (they drain first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CORPUS="${NAGARE_CORPUS:-../shared/corpus/sample.jsonl}"
[ -f "$CORPUS" ] || {
    echo "no corpus at $CORPUS: check out the shared/ directory beside the repository root" >&2
    echo "($(cd .. && pwd)/shared), or set NAGARE_CORPUS to a corpus jsonl" >&2
    exit 1
}
command -v python3 >/dev/null || { echo "python3 is needed (ports, JSON)" >&2; exit 1; }

echo "== building (first time: a few minutes)"
cargo build -q -p nagare-forwarder -p nagare-aggregator -p nagare-loadgen
BIN=target/debug
W="$(mktemp -d "${TMPDIR:-/tmp}/nagare-demo.XXXXXX")"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_of() { # ready-file -> port of the first input
    for _ in $(seq 1 300); do
        [ -s "$1" ] && break
        sleep 0.1
    done
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["inputs"][0]["addr"].rsplit(":",1)[1])' "$1"
}

# --- CloudWatch Logs: moto if there is one ---------------------------------------------------
VENV_PY=.ci/venv/bin/python
MOTO="${NAGARE_MOTO_ENDPOINT:-}"
# NAGARE_DEMO_CLOUDWATCH=standin: use the stand-in even when moto is there.
[ "${NAGARE_DEMO_CLOUDWATCH:-}" = standin ] && MOTO=""
if [ -z "$MOTO" ] && [ "${NAGARE_DEMO_CLOUDWATCH:-}" != standin ] && [ -x .ci/venv/bin/moto_server ]; then
    MP="$(free_port)"
    echo "== starting moto_server on 127.0.0.1:$MP (CloudWatch Logs endpoint)"
    .ci/venv/bin/moto_server -H 127.0.0.1 -p "$MP" >"$W/moto.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$MP") 2>/dev/null && break
        sleep 0.1
    done
    MOTO="http://127.0.0.1:$MP"
fi
AGG_CONF=examples/aggregator.conf
STREAM="demo-aggregator-$$"
if [ -z "$MOTO" ]; then
    echo
    echo "!! no moto (run 'sudo .ci/install-deps.sh', which creates .ci/venv and target/interop and"
    echo "!! hands them back to you, or set NAGARE_MOTO_ENDPOINT): the aggregator's"
    echo "!! cloudwatch_logs <match> is replaced by JSON-lines files, one per log group and stream"
    echo
    AGG_CONF="$W/aggregator-standin.conf"
    python3 - "$AGG_CONF" <<'EOF'
import sys
text = open("examples/aggregator.conf").read()
at = text.index("@type cloudwatch_logs")
a = text.rindex("<match", 0, at)
b = text.index("</match>", at) + len("</match>")
standin = """<match docker.**>
  @type file
  @id cloudwatch_standin
  path "#{ENV.fetch('NAGARE_DATA_DIR')}/cloudwatch/${service}/#{Socket.gethostname}.jsonl"
  append true
  <format>
    @type json
  </format>
  <buffer tag,service>
    flush_interval 1s
  </buffer>
</match>"""
open(sys.argv[1], "w").write(text[:a] + standin + text[b:])
EOF
fi

# --- the corpus, a day ago -------------------------------------------------------------------
python3 - "$CORPUS" "$W/corpus.jsonl" <<'EOF'
import json, sys, time
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
shift = (int(time.time()) - 86400 - lines[0]["time"]) // 300 * 300
with open(sys.argv[2], "w") as out:
    for v in lines:
        v["time"] += shift
        out.write(json.dumps(v) + "\n")
EOF

echo "== starting nagare-aggregator ($AGG_CONF, CloudWatch: ${MOTO:-JSON-lines stand-in})"
NAGARE_BIND=127.0.0.1 NAGARE_PORT=0 NAGARE_DATA_DIR="$W/aggregator" NAGARE_HOSTNAME="$STREAM" \
    NAGARE_CLOUDWATCH_ENDPOINT="$MOTO" AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
    "$BIN/nagare-aggregator" -c "$AGG_CONF" --ready-file "$W/aggregator.ready" \
    --log-format text >"$W/aggregator.log" 2>&1 &
pids+=($!)
AGG_PID=$!
AP="$(port_of "$W/aggregator.ready")"

echo "== starting nagare-forwarder (examples/forwarder.conf, S3 = embedded store in $W/s3)"
NAGARE_BIND=127.0.0.1 NAGARE_PORT=0 NAGARE_DATA_DIR="$W/forwarder" NAGARE_HOSTNAME=forwarder-1 \
    NAGARE_S3_ENDPOINT="file://$W/s3" NAGARE_S3_AUTO_CREATE=true \
    NAGARE_AGGREGATOR_HOST=127.0.0.1 NAGARE_AGGREGATOR_PORT="$AP" \
    "$BIN/nagare-forwarder" -c examples/forwarder.conf --ready-file "$W/forwarder.ready" \
    --log-format text >"$W/forwarder.log" 2>&1 &
pids+=($!)
FWD_PID=$!
FP="$(port_of "$W/forwarder.ready")"

echo "== replaying $CORPUS into the forwarder (Message mode, one record per message, with acks)"
"$BIN/nagare-loadgen" --addr "127.0.0.1:$FP" --corpus "$W/corpus.jsonl" --mode message --tag-per-record \
    --ack --window 1 --events "$(wc -l <"$W/corpus.jsonl")"

echo "== SIGTERM to the forwarder (it drains to S3 and the aggregator), then to the aggregator"
sleep 2
kill -TERM "$FWD_PID"; wait "$FWD_PID" || true
kill -TERM "$AGG_PID"; wait "$AGG_PID" || true

echo
echo "== S3 (embedded store, bucket nagare-logs at $W/s3/nagare-logs): objects and lines"
objects=0; s3_lines=0
while IFS= read -r f; do
    n=$(gzip -dc "$f" | wc -l); objects=$((objects + 1)); s3_lines=$((s3_lines + n))
    [ "$objects" -le 12 ] && printf '  s3://nagare-logs/%-62s %5d lines\n' "${f#"$W/s3/nagare-logs/"}" "$n"
done < <(find "$W/s3/nagare-logs" -path '*/.nagare-tmp' -prune -o -type f -name '*.gz' -print | sort)
[ "$objects" -gt 12 ] && echo "  ... and $((objects - 12)) more objects"
echo "  $objects objects, $s3_lines lines (the corpus has 2,000 lines; 304 health checks are dropped by the config)"

echo
cw_lines=0
if [ -n "$MOTO" ]; then
    echo "== CloudWatch Logs ($MOTO): log groups, stream $STREAM, events"
    if [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import boto3' 2>/dev/null; then
        cw_lines="$("$VENV_PY" - "$MOTO" "$STREAM" <<'EOF'
import sys, boto3
logs = boto3.client("logs", endpoint_url=sys.argv[1], region_name="us-east-1",
                    aws_access_key_id="testing", aws_secret_access_key="testing")
total = 0
for page in logs.get_paginator("describe_log_groups").paginate():
    for g in page["logGroups"]:
        name = g["logGroupName"]
        events, token = 0, None
        for _ in range(1000):
            args = dict(logGroupName=name, logStreamName=sys.argv[2], startFromHead=True)
            if token:
                args["nextToken"] = token
            try:
                r = logs.get_log_events(**args)
            except logs.exceptions.ResourceNotFoundException:
                break
            events += len(r["events"])
            if not r["events"] or r.get("nextForwardToken") in (None, token):
                break
            token = r["nextForwardToken"]
        if events:
            print(f"  group {name:<10} stream {sys.argv[2]:<24} {events:5d} events", file=sys.stderr)
            total += events
print(total)
EOF
)"
    else
        echo "  (no boto3 in $VENV_PY to read them back; see $W/aggregator.log)"
    fi
else
    echo "== CloudWatch Logs stand-in (aggregator, one file per log group and stream)"
    while IFS= read -r f; do
        n=$(wc -l <"$f"); cw_lines=$((cw_lines + n))
        printf '  group %-10s stream %-24s %5d events\n' "$(basename "$(dirname "$f")")" "$(basename "$f" .jsonl)" "$n"
    done < <(find "$W/aggregator/cloudwatch" -type f | sort)
fi
echo "  $cw_lines error/fatal events (the corpus has 99)"
echo
echo "Logs and data are in $W"
