"""
The long fault-injection run: C{python -m estwisted.testing.chaos} with
many rounds (default 100), once per seed, each summary line kept and all
of them written as JSON to C{benchmarks/results/chaos.json}.

Usage: C{python benchmarks/chaos.py [--rounds 100] [--seeds 1,2,3]
[--faults kill_leader,...] [--output PATH]}.  Exits 1 if any run found a
violation.  A 100-round run takes about a quarter of an hour and keeps
both cores of a small machine busy.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this directory comes first on sys.path, where sibling
# benchmark modules (http.py) would shadow the standard library.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results", "chaos.json")


def run_one(rounds: int, seed: int, extra: list[str], timeout: float) -> dict[str, Any]:
    """
    One chaos run in a child process; its summary line.
    """
    command = [sys.executable, "-m", "estwisted.testing.chaos", "--rounds", str(rounds),
               "--seed", str(seed)] + extra
    started = time.time()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"seed": seed, "rounds": rounds, "ok": False, "error": "timed out"}
    lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        summary: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        summary = {"seed": seed, "rounds": rounds, "ok": False, "error": "no summary",
                   "stderr": done.stderr.decode("utf-8", "replace")[-2000:]}
    summary["returncode"] = done.returncode
    summary["wall_s"] = round(time.time() - started, 1)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--faults", default=None)
    parser.add_argument("--workdir", default=None,
                        help="keep node data and logs under this directory")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()
    runs = []
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        extra = []
        if args.faults:
            extra += ["--faults", args.faults]
        if args.workdir:
            extra += ["--workdir", os.path.join(args.workdir, f"seed{seed}")]
        summary = run_one(args.rounds, seed, extra, timeout=60 * 20 + 30 * args.rounds)
        print(json.dumps(summary, sort_keys=True), flush=True)
        runs.append(summary)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"machine": platform.platform(), "python": platform.python_version(),
                   "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                  time.gmtime()),
                   "runs": runs}, f, indent=1, sort_keys=True)
    return 0 if all(r.get("ok") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
