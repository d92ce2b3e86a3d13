"""Print where a py-spy profile spends its samples, by function.

    python -m bench.profile_summary PROFILE.txt [--top 25] [--under FUNCTION]

PROFILE.txt is py-spy's ``raw`` output (collapsed stacks, as ``--profile`` of the benchmarks
writes): one line per stack, frames separated by ``;`` and the sample count last. Frames are
grouped by function and file, without line numbers. "self" counts the samples in which the
function was running; "total" counts those in which it was on the stack.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE_NUMBER = re.compile(r":\d+\)$")


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """Return each stack of the profile, outermost frame first, with its sample count."""
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        names = [_LINE_NUMBER.sub(")", frame) for frame in frames.split(";")]
        stacks.append((names, int(count)))
    return stacks


def summarise(
    stacks: list[tuple[list[str], int]], under: str | None
) -> tuple[Counter[str], Counter[str], int]:
    """Count self and total samples per function, only in stacks through ``under`` if given."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for frames, count in stacks:
        if under is not None:
            starts = [index for index, frame in enumerate(frames) if under in frame]
            if not starts:
                continue
            frames = frames[starts[0] :]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return own, total, samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary", description=__doc__)
    parser.add_argument("profile", type=Path, help="py-spy raw output (collapsed stacks).")
    parser.add_argument("--top", type=int, default=25, help="Functions to list (default 25).")
    parser.add_argument(
        "--under", help="Count only samples whose stack passes through a frame containing this."
    )
    args = parser.parse_args(argv)

    own, total, samples = summarise(read_stacks(args.profile), args.under)
    if samples == 0:
        print("No samples matched.", file=sys.stderr)
        return 1
    print(f"{samples} samples" + (f" under {args.under!r}" if args.under else ""))
    for title, counter in (("self", own), ("total", total)):
        print(f"\nby {title} samples:")
        for frame, count in counter.most_common(args.top):
            print(f"{100 * count / samples:6.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
