"""make chaos: the fault scenarios against a local cloud of the run's own, checked against the history.

    python -m tests.chaos.run [--only duplicate_delivery,worker_race] [--out .chaos/results.json]

Prints a table (scenario, jobs, items, lost, doubled, reruns, time to final) and writes the same to
`.chaos/results.json`. Exits 1 when anything was lost or doubled, a job was not final within its bound, or a
scenario could not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
import uuid
from collections.abc import Sequence
from pathlib import Path

from shared.emulator_config import REPO_ROOT
from tests.chaos.checker import Verdict
from tests.chaos.cloud import ChaosCloud
from tests.chaos.scenarios import SCENARIOS

RESULTS = REPO_ROOT / ".chaos" / "results.json"
COLUMNS = ("scenario", "jobs", "items", "lost", "doubled", "reruns", "time to final s", "bound s", "result")


def _emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def table(verdicts: Sequence[Verdict]) -> str:
    rows = [
        (
            v.scenario,
            str(v.jobs),
            str(v.items),
            str(v.lost),
            str(v.doubled),
            str(v.reruns),
            f"{v.time_to_final_s:.1f}",
            f"{v.bound_s:.0f}",
            "ok" if v.passed else "FAIL",
        )
        for v in verdicts
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fault scenarios checked against the history.")
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}; known: {[s.name for s in SCENARIOS]}")
    chosen = [s for s in SCENARIOS if not names or s.name in names]
    run_id = uuid.uuid4().hex[:6]
    cloud = ChaosCloud()
    began = time.monotonic()
    verdicts: list[Verdict] = []
    cloud.start()
    try:
        for scenario in chosen:
            _emit(f"-- {scenario.name}: {scenario.fault}")
            started = time.monotonic()
            try:
                verdict = scenario.run(cloud, f"{run_id}s{len(verdicts):02d}")
            except Exception as exc:
                verdict = Verdict(scenario=scenario.name, problems=[f"could not run: {exc!r}"])
                _emit(traceback.format_exc())
            verdict.fault_evidence["scenarioSeconds"] = round(time.monotonic() - started, 1)
            verdicts.append(verdict)
            for problem in verdict.problems[:20]:
                _emit(f"   {problem}")
            _emit(f"   {'ok' if verdict.passed else 'FAIL'} in {time.monotonic() - started:.1f} s")
    finally:
        cloud.stop()
    total_s = time.monotonic() - began
    _emit("")
    _emit(table(verdicts))
    _emit(f"total {total_s:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"totalSeconds": round(total_s, 1), "scenarios": [v.as_json() for v in verdicts]}, indent=2
        )
        + "\n"
    )
    return 0 if verdicts and all(v.passed for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
