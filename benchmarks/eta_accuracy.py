"""How far the progress line's run ETA is from the time the run actually had left.

Runs ``run_all.py`` with the arguments given after ``--`` (plain output, one line per epoch and per
long section), stamps every line with the time it arrived, and when the run ends compares each
printed run ETA with the time that was really left. Lines from before the first training epoch are
left out: until training is measured the ETA says so instead of guessing. The ratio is ETA / actual,
or its inverse when the ETA is short, so 2.0 means "off by 2x" either way. Near the end any absolute
error becomes a large ratio, so the worst is also given for the lines with more than 10 s and 60 s left.

    python benchmarks/eta_accuracy.py -- --profile cpu --data-dir ~/.cache/cifar-stress/cifar10-batches
    python benchmarks/eta_accuracy.py --log stamped.txt   # a log this script wrote earlier
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"h": 3600, "m": 60, "s": 1}


def eta_rows(stamped: list[tuple[float, str]], end: float) -> list[tuple[float, float, str]]:
    """``[(ETA seconds, actual seconds left, line)]`` for every run ETA printed once training ran."""
    rows, training = [], False
    for stamp, text in stamped:
        training = training or bool(re.search(r"\[(baseline|augmented)\] epoch \d", text))
        eta = re.search(r"run ETA ((?:\d+[hms])+)\s*$", text)
        if training and eta:
            seconds = sum(int(n) * UNITS[u] for n, u in re.findall(r"(\d+)([hms])", eta.group(1)))
            rows.append((float(seconds), end - stamp, text))
    return rows


def off_by(eta: float, actual: float) -> float:
    """How many times too long or too short an ETA is (1.0: exact), at a resolution of 1 s."""
    eta, actual = max(eta, 1.0), max(actual, 1.0)
    return max(eta / actual, actual / eta)


def report(stamped: list[tuple[float, str]], end: float) -> None:
    """Print every ETA line against the actual time left, then the worst ratios."""
    rows = eta_rows(stamped, end)
    if not rows:
        print("no run ETA printed after a training epoch: did the run train, and in plain output?")
    for eta, left, text in rows:
        print(f"ETA {eta / 60:6.1f} min  actual {left / 60:6.1f} min  x{off_by(eta, left):5.2f}  {text[:70]}")
    for floor in (0, 10, 60):
        kept = [row for row in rows if row[1] > floor]
        if kept:
            eta, left, text = max(kept, key=lambda row: off_by(row[0], row[1]))
            print(
                f"worst with more than {floor:>2} s left: x{off_by(eta, left):.2f} "
                f"(ETA {eta:.0f} s, actual {left:.0f} s) {text[:60]}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, help="a stamped log written by an earlier run of this script")
    parser.add_argument(
        "--save", type=Path, default=Path("eta_log.txt"), help="where to write the stamped log"
    )
    parser.add_argument("run_all_args", nargs="*", help="arguments for run_all.py (after --)")
    args = parser.parse_args()
    if args.log:
        lines = args.log.read_text(encoding="utf-8").splitlines()
        stamped = [(float(m[1]), m[2]) for m in map(re.compile(r"^(\d+\.\d+) (.*)$").match, lines) if m]
        end = stamped.pop()[0]  # the last line marks the end of the run
        report(stamped, end)
        return 0
    command = [sys.executable, "-u", str(ROOT / "run_all.py"), *args.run_all_args]
    stamped = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            stamped.append((time.time(), line.rstrip("\n")))
            print(line, end="", flush=True)
    end = time.time()
    text = "".join(
        f"{stamp:.1f} {line}\n" for stamp, line in [*stamped, (end, f"END rc {process.returncode}")]
    )
    args.save.write_text(text, encoding="utf-8")
    print(f"\nstamped log: {args.save}")
    report(stamped, end)
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
