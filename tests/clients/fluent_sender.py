#!/usr/bin/env python3
"""Send N records through PyPI `fluent-logger` (the real library), for Nagare's interop tests.

Run it with the venv that .ci/install-deps.sh creates:

    .ci/venv/bin/python tests/clients/fluent_sender.py --host 127.0.0.1 --port P --tag TAG \
        --count N [--mode sync|async] [--nanosecond] [--start 0]

Record i (i = start .. start+N-1) is {"seq": i, "kind": "python", "msg": "line <i>"} with tag TAG.
On the wire (Message mode, 3 elements, no option, one TCP connection):
  * default:       [tag, 1700000000 + i, record]                 time as msgpack uint32 (0xce)
  * --nanosecond:  [tag, EventTime(1700000000 + i, 123456789), record]   fixext8 (0xd7 0x00)
    (`--time-style float` passes the float 1700000000 + i + 0.123456789 instead and lets the
    library convert it; a double near 1.7e9 only keeps ~0.2 us, so nsec comes out as 123456716.)

Prints one JSON line: {"sent": N, "errors": E, "mode": ..., "nanosecond": bool, ...}; exit 1 if
any error was seen (emit_with_time returned False, last_error set, buffer overflow, or bytes
still pending after close()), 3 if fluent-logger is not installed.
"""

import argparse
import json
import sys
import threading
import time

try:
    from fluent import asyncsender, sender
except ImportError as e:  # pragma: no cover
    print(f"fluent_sender.py: cannot import fluent-logger ({e}); run .ci/install-deps.sh and use "
          ".ci/venv/bin/python", file=sys.stderr)
    sys.exit(3)

BASE_TIME = 1700000000
NANOS = 123456789


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--mode", choices=("sync", "async"), default="sync")
    ap.add_argument("--nanosecond", action="store_true",
                    help="nanosecond_precision=True and sub-second times (EventTime on the wire)")
    ap.add_argument("--time-style", choices=("eventtime", "float"), default="eventtime",
                    help="with --nanosecond: pass sender.EventTime(sec, 123456789) (exact) or the float "
                         "sec+0.123456789 (library converts it; float precision loss)")
    ap.add_argument("--timeout", type=float, default=3.0, help="socket timeout (library default 3.0)")
    ap.add_argument("--queue-maxsize", type=int, default=100, help="async queue size (library default 100)")
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds to wait before close()")
    args = ap.parse_args()

    lock = threading.Lock()
    thread_errors = []  # errors recorded by the library on any thread (async: the sender thread)
    overflows = []      # bytes the library gave up on (bufmax exceeded, or close() flush failed)

    def on_overflow(pending):
        with lock:
            overflows.append(len(pending))

    common = dict(host=args.host, port=args.port, timeout=args.timeout,
                  nanosecond_precision=args.nanosecond, buffer_overflow_handler=on_overflow)
    if args.mode == "sync":
        s = sender.FluentSender(args.tag, **common)
    else:
        # The library stores last_error in a threading.local, so errors raised on the async sender
        # thread are invisible to this thread. Observe them through the setter; behaviour unchanged.
        class ObservedAsyncSender(asyncsender.FluentSender):
            @property
            def last_error(self):
                return sender.FluentSender.last_error.fget(self)

            @last_error.setter
            def last_error(self, err):
                with lock:
                    thread_errors.append(repr(err))
                sender.FluentSender.last_error.fset(self, err)

        s = ObservedAsyncSender(args.tag, queue_maxsize=args.queue_maxsize, **common)

    sent = 0
    failed = 0
    first_error = None
    for i in range(args.start, args.start + args.count):
        record = {"seq": i, "kind": "python", "msg": f"line {i}"}
        sec = BASE_TIME + i
        if not args.nanosecond:
            ts = sec  # int -> msgpack uint32 (a float here would go out as float64 0xcb)
        elif args.time_style == "float":
            ts = sec + NANOS / 1e9  # float + nanosecond_precision -> EventTime
        else:
            ts = sender.EventTime(sec, nanoseconds=NANOS)
        # label None: the tag is the sender's tag as is (a label would give "TAG.label")
        ok = s.emit_with_time(None, ts, record)
        if ok:
            sent += 1
        else:
            failed += 1
            err = s.last_error
            if first_error is None:
                first_error = repr(err)
            print(f"fluent_sender.py: emit #{i} failed: {err!r}", file=sys.stderr)
            s.clear_last_error()
    if args.sleep:
        time.sleep(args.sleep)
    # sync close(): one last attempt to send what is pending, else buffer_overflow_handler.
    # async close(): flush=True waits for the sender thread to drain the queue; it does NOT retry
    # bytes left in `pendings` after a failed send, so check them below.
    s.close()
    lost_pending = len(s.pendings) if s.pendings else 0

    with lock:
        errors = failed + len(thread_errors) + len(overflows) + (1 if lost_pending else 0)
        summary = {
            "sent": sent, "errors": errors, "mode": args.mode, "nanosecond": args.nanosecond,
            "count": args.count, "emit_failures": failed, "sender_thread_errors": len(thread_errors),
            "overflowed_bytes": sum(overflows), "pending_bytes_after_close": lost_pending,
        }
        if first_error or thread_errors:
            summary["first_error"] = first_error or thread_errors[0]
    print(json.dumps(summary), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
