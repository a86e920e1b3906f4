#!/usr/bin/env python3
"""List every metric Nagare registers, from the source, and check docs/operations.md.

    python3 deploy/tools/metrics_inventory.py            # table: name, kind, labels, reasons, help, where
    python3 deploy/tools/metrics_inventory.py --check    # exit 1 if docs/operations.md misses a name
                                                         # or names one the code no longer has

Metrics are registered through three calls in nagare_core::metrics: `counter(name, help,
labels)`, `gauge(name, help, labels)` and `ReasonCounters::new(name, help, labels)` (a family
with an extra `reason` label). This script finds those calls in crates/**/src (tests and
benches are skipped), resolves the label keys when they are written inline or bound with
`let l = [...]` in the same file, and collects the reason values passed as string literals
to the family's `.inc("...")` / `.add("...", n)` / `.get("...")` in the same file. Reasons
passed through variables (decode errors, AWS error classes) are shown as `(from code)`: read
the source for those. Standard library only.
"""

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
CALL = re.compile(
    r'(?P<kind>counter|gauge|ReasonCounters::new)\(\s*"(?P<name>nagare_[a-z0-9_]+)"\s*,\s*'
    r'(?P<help>(?:"(?:[^"\\]|\\.)*"\s*)+),\s*(?P<labels>[^)]*?)\s*,?\s*\)',
    re.S,
)
BINDING = re.compile(r'(?:let\s+(?:mut\s+)?|^\s*)(?P<var>[a-z_][a-z0-9_]*)\s*[:=]\s*(?:[A-Za-z_:]+::)?$', re.M)
LET_LABELS = re.compile(r'let\s+(?P<var>[a-z_][a-z0-9_]*)\s*(?::[^=]+)?=\s*(?P<body>\[[^;]*?\]|vec!\[[^;]*?\])\s*;', re.S)
KEY = re.compile(r'\(\s*"([a-z_]+)"\s*,')
NOT_DOCUMENTED = {"nagare_test_total", "nagare_test_drops_total"}


def label_keys(arg, text):
    keys = KEY.findall(arg)
    if keys:
        return keys
    var = arg.strip().lstrip("&").strip()
    for m in LET_LABELS.finditer(text):
        if m.group("var") == var:
            return KEY.findall(m.group("body"))
    return []


def field_of(text, start):
    """The name the call result is bound to: `field: ReasonCounters::new(` or `let x = ...`."""
    head = text[max(0, start - 120):start]
    m = re.search(r'([a-z_][a-z0-9_]*)\s*[:=]\s*(?:nagare_core::metrics::|metrics::)?$', head)
    return m.group(1) if m else None


def scan():
    metrics = {}
    for path in sorted((ROOT / "crates").glob("*/src/**/*.rs")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "#[cfg(test)]" in text:
            cut = text.index("#[cfg(test)]")
        else:
            cut = len(text)
        for m in CALL.finditer(text):
            if m.start() >= cut:
                continue
            name = m.group("name")
            kind = {"ReasonCounters::new": "counter (reason)"}.get(m.group("kind"), m.group("kind"))
            helps = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group("help")))
            keys = label_keys(m.group("labels"), text)
            if m.group("kind") == "ReasonCounters::new":
                keys = keys + ["reason"]
            reasons = set()
            dynamic = False
            field = field_of(text, m.start())
            if m.group("kind") == "ReasonCounters::new" and field:
                for r in re.finditer(r'\b' + re.escape(field) + r'\s*(?:\[[^\]]*\])?\s*\.(?:inc|add|get)\(\s*([^,)]*)', text):
                    arg = r.group(1).strip()
                    lit = re.fullmatch(r'"([a-z0-9_]+)"', arg)
                    if lit:
                        reasons.add(lit.group(1))
                    elif arg:
                        dynamic = True
            rel = path.relative_to(ROOT).as_posix()
            line = text.count("\n", 0, m.start()) + 1
            e = metrics.setdefault(name, {"kind": kind, "help": helps, "labels": set(), "reasons": set(),
                                          "dynamic": False, "where": []})
            e["labels"].update(keys)
            e["reasons"].update(reasons)
            e["dynamic"] = e["dynamic"] or dynamic
            e["where"].append(f"{rel}:{line}")
    for n in NOT_DOCUMENTED:
        metrics.pop(n, None)
    return metrics


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with docs/operations.md")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "operations.md"))
    args = ap.parse_args()
    metrics = scan()
    if args.check:
        doc = pathlib.Path(args.doc).read_text(encoding="utf-8")
        # Names count as documented in the "## Metrics" section; anywhere in the page, a
        # name with a known metric family prefix (nagare_input_, nagare_s3_, ...) that the code
        # does not register is stale (table names such as nagare_app_logs are not metrics).
        section = re.search(r"^## Metrics$(.*?)(?=^## )", doc, re.S | re.M)
        documented = set(re.findall(r"`(nagare_[a-z0-9_]+)", section.group(1) if section else doc))
        families = {"_".join(n.split("_")[:2]) + "_" for n in metrics}
        mentioned = {n for n in re.findall(r"(nagare_[a-z0-9_]+)", doc) if any(n.startswith(f) for f in families)}
        missing = sorted(set(metrics) - documented)
        stale = sorted(mentioned - set(metrics) - NOT_DOCUMENTED)
        for n in missing:
            print(f"not documented in {args.doc}: {n} ({', '.join(metrics[n]['where'])})")
        for n in stale:
            print(f"documented but not registered by the code: {n}")
        return 1 if missing or stale else 0
    for name, e in sorted(metrics.items()):
        labels = ",".join(sorted(e["labels"], key=lambda k: (k == "reason", k)))
        reasons = ",".join(sorted(e["reasons"])) + (" +(from code)" if e["dynamic"] else "")
        print(f"{name}\t{e['kind']}\t{{{labels}}}\t{reasons}\t{e['help']}\t{' '.join(e['where'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
