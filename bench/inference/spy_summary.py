"""Summarize py-spy's raw (collapsed) stacks: where the samples fall, per thread kind, by the
innermost frame of our own code and by the innermost frame of all, so that a profile taken on the
GPU machine reads as a short table in the run's output.

    python3 -m bench.inference.spy_summary spy-base-default-gil.txt [--top 12]

A line of the raw format is `thread (TID): NAME;frame;frame;... COUNT` (py-spy `--threads`),
behind `process PID:"COMMAND";` with `--subprocesses`, once per level: the server's own threads
are tagged `server/`, those of the processes it spawned (model, tokenizers) `child/`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_THREAD = re.compile(r"^thread \(\d+\): ?(?P<name>[^;]*)")
_DIGITS = re.compile(r"_\d+$")
_OURS = ("kuberank_inference/", "bench/")


@dataclass(frozen=True, slots=True)
class Sample:
    thread: str
    frames: tuple[str, ...]
    count: int


def parse(lines: Iterable[str]) -> list[Sample]:
    samples = []
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        depth = 0
        while stack.startswith("process "):  # py-spy --subprocesses: `process PID:"CMD";`
            end = stack.find('";')  # the command line itself may hold ';'
            if end < 0:
                break
            depth += 1
            stack = stack[end + 2 :]
        parts = stack.split(";")
        process = {0: "", 1: "server/"}.get(depth, "child/")
        match = _THREAD.match(parts[0]) if parts else None
        thread = _DIGITS.sub("", match.group("name")) if match else "?"
        frames = tuple(parts[1:] if match else parts)
        samples.append(Sample(process + (thread or "?"), frames, int(count)))
    return samples


def _short(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file.py:12)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def _ours(frames: Sequence[str]) -> str:
    for frame in reversed(frames):
        if any(part in frame for part in _OURS):
            return _short(frame)
    return "(outside kuberank)"


def summarize(samples: Sequence[Sample], *, top: int = 12, possible: int = 0) -> str:
    """Shares of the samples; with `possible` (rate x seconds), also what share of that time
    anything was sampled at all (with --gil: how busy each process's GIL was)."""
    total = sum(sample.count for sample in samples) or 1
    threads: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for sample in samples:
        threads[sample.thread] += sample.count
        leaf = _short(sample.frames[-1]) if sample.frames else "?"
        leaves[f"{sample.thread}: {leaf}"] += sample.count
        ours[f"{sample.thread}: {_ours(sample.frames)}"] += sample.count
    lines = [f"{total} samples"]
    if possible:
        lines[0] += f" of {possible} possible per process ({100 * total / possible:.0f} %)"
    for title, counter in (
        ("by thread", threads),
        ("by innermost kuberank frame", ours),
        ("by innermost frame", leaves),
    ):
        lines.append(f"-- {title}")
        for key, count in counter.most_common(top):
            lines.append(f"{100 * count / total:5.1f} %  {key}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    for path in args.files:
        print(f"== {path.name}")
        print(summarize(parse(path.read_text(encoding="utf-8").splitlines()), top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
