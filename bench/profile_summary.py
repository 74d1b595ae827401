"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) written by
``bench/run.py --profile DIR``: where the samples are, by function and by package.

    python bench/profile_summary.py DIR/B1-inboxd.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def package(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/lib/python3" in path:
        return "stdlib"
    for name in ("inboxd", "schema", "resolvers", "storage", "mail", "bench"):
        if f"/{name}/" in path:
            return f"[{name}]"
    return path.rsplit("/", 1)[-1] or "?"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    idle = 0
    with open(args.path) as handle:
        lines = handle.readlines()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue  # a frame name with a line break in it: rare, skipped
        n = int(count)
        total += n
        frames = [
            f
            for f in stack.split(";")
            if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        names = []
        for frame in frames:
            m = FRAME.match(frame)
            file = m.group("file") if m else frame
            func = m.group("func") if m else frame
            names.append((f"{func} ({file.rsplit('/', 1)[-1]})", package(file)))
        if not names:
            continue
        leaf, leaf_pkg = names[-1]
        if leaf.startswith(("select (selectors", "run (uvloop", "run_forever")):
            idle += n
        own[leaf] += n
        by_package[leaf_pkg] += n
        for key in {name for name, _ in names}:
            inclusive[key] += n
    print(f"{args.path}: {total} samples")
    print("\nself time by package:")
    for name, n in by_package.most_common(12):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\nself time by function:")
    for name, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\ninclusive time by function:")
    for name, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
