#!/usr/bin/env bash
# Whole-process throughput: nagare-forwarder (in_forward -> @type null) driven by nagare-loadgen.
#
#   crates/nagare-loadgen/e2e.sh [nagare-loadgen args except --addr]
#   e.g. crates/nagare-loadgen/e2e.sh --mode packed --batch 2000 --ack --connections 2 --events 4000000
#
# Starts a fresh forwarder on 127.0.0.1 port 0 (never 24224), finds its port in the ready file,
# runs the load generator, and prints the generator's JSON line extended with the forwarder's
# CPU seconds during the run (utime+stime from /proc/PID/stat, before/after), CPU microseconds
# per event, its peak RSS (VmHWM) and the generator's own CPU seconds. Exits with the
# generator's status. Binaries: $FORWARDER and $LOADGEN (default target/release/...).
# $SOURCE_EXTRA is added inside <source> (e.g. SOURCE_EXTRA='dedupe_resends false').
set -euo pipefail
cd "$(dirname "$0")/../.."
FORWARDER=${FORWARDER:-target/release/nagare-forwarder}
LOADGEN=${LOADGEN:-target/release/nagare-loadgen}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/null.conf" <<CONF
<source>
  @type forward
  bind 127.0.0.1
  port 0
  ${SOURCE_EXTRA:-}
</source>
<match **>
  @type null
</match>
CONF
"$FORWARDER" -c "$dir/null.conf" --ready-file "$dir/ready" --log-level warn 2>"$dir/forwarder.log" &
pid=$!
for _ in $(seq 100); do [ -s "$dir/ready" ] && break; sleep 0.1; done
if [ ! -s "$dir/ready" ]; then
  echo "forwarder did not become ready" >&2; cat "$dir/forwarder.log" >&2; kill "$pid" 2>/dev/null; exit 1
fi
addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["inputs"][0]["addr"])' "$dir/ready")
cpu() { awk '{print $14, $15}' "/proc/$pid/stat"; }
before=$(cpu)
rc=0
/usr/bin/time -f '%U %S' -o "$dir/lg.time" "$LOADGEN" --addr "$addr" "$@" >"$dir/out.json" || rc=$?
after=$(cpu)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
kill "$pid"; wait "$pid" 2>/dev/null || true
python3 - "$dir/out.json" "$before" "$after" "$hwm" "$(getconf CLK_TCK)" "$dir/lg.time" <<'PY'
import json, sys
out, before, after, hwm, tck, lgt = sys.argv[1:]
r = json.loads(open(out).read().strip().splitlines()[-1])
(u0, s0), (u1, s1) = [map(int, x.split()) for x in (before, after)]
user, system = (u1 - u0) / int(tck), (s1 - s0) / int(tck)
cpu = user + system
r["forwarder_cpu_seconds"] = round(cpu, 2)
r["forwarder_user_seconds"] = round(user, 2)
r["forwarder_sys_seconds"] = round(system, 2)
r["forwarder_cpu_us_per_event"] = round(cpu * 1e6 / max(r["events"], 1), 3)
r["forwarder_cores_busy"] = round(cpu / r["seconds"], 2)
r["forwarder_peak_rss_mb"] = round(int(hwm) / 1024, 1)
u, s = open(lgt).read().split()[-2:]
r["loadgen_cpu_seconds"] = round(float(u) + float(s), 2)
print(json.dumps(r))
PY
[ -s "$dir/forwarder.log" ] && { echo "--- forwarder log:" >&2; tail -5 "$dir/forwarder.log" >&2; }
exit "$rc"
