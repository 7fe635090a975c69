"""Fuzz every public function's OpenAPI document with schemathesis, through the gateway (`make fuzz`).

For each function with a route table (`API` in functions/<name>.py): `st run <gateway>/<name>/openapi.json`
with a fresh tenant's API key and the checks of issue 17 (not_a_server_error, status_code_conformance,
content_type_conformance, response_schema_conformance, negative_data_rejection, ignored_auth), every phase
(examples, coverage, fuzzing, stateful with the documents' links). Prints a table (function, operations,
cases, failures, errors, seconds) and writes .fuzz/results.json; exits non-zero on any failure, error, or a
function fuzzed with fewer cases than asked. Streaming routes (server-sent events) are not fuzzed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from infra import localcloud
from infra.gateway import function_sources
from shared import runtime
from shared.api import Api
from shared.app import platform
from shared.emulator_config import REPO_ROOT, load_emulator_config
from shared.models.auth import Role
from shared.openapi import openapi_path
from shared.services.auth import create_api_key

RESULTS_DIR = REPO_ROOT / ".fuzz"
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
]
ST = Path(sys.executable).parent / "st"


@dataclass
class Outcome:
    function: str
    operations: int
    cases: int
    failures: int
    errors: int
    seconds: float
    failure_titles: list[str]


def public_apis() -> dict[str, Api]:
    """Every function whose entry point dispatches through a route table."""
    found: dict[str, Api] = {}
    for name in function_sources():
        api = getattr(importlib.import_module(f"functions.{name}"), "API", None)
        if isinstance(api, Api):
            found[name] = api
    return found


def fuzz_key(tenant: str) -> str:
    wired = platform()
    # A limit no fuzzing run reaches: the rate limit itself is checked by the access-control matrix.
    return runtime.run(
        create_api_key(
            keys=wired.keys,
            tenant=tenant,
            role=Role.USER,
            now=wired.engine.clock(),
            rate_limit_per_minute=1_000_000,
        )
    )


def fuzz_one(
    *,
    name: str,
    api: Api,
    gateway: str,
    key: str,
    max_examples: int,
    seed: int,
    workers: int,
    deterministic: bool,
) -> Outcome:
    report = RESULTS_DIR / f"{name}.json"
    command = [
        str(ST),
        "run",
        f"{gateway}/{name}/openapi.json",
        "--url",
        f"{gateway}/{name}",
        "-H",
        f"Authorization: Bearer {key}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        *(["--generation-deterministic"] if deterministic else ["--generation-database", "none"]),
        "--workers",
        str(workers),
        "--request-timeout",
        "120",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    for route in api.routes:
        if route.streaming:
            command += ["--exclude-path", openapi_path(route.path)]
    started = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    seconds = round(time.monotonic() - started, 1)
    (RESULTS_DIR / f"{name}.log").write_text(completed.stdout + completed.stderr)
    if not report.is_file():
        sys.stderr.write(completed.stdout[-3000:] + completed.stderr[-3000:])
        return Outcome(name, 0, 0, 0, 1, seconds, ["schemathesis wrote no report"])
    result = json.loads(report.read_text())
    failures = result.get("failures", [])
    titles = sorted(
        f"{f.get('code', '')} {f.get('title', '')} ({', '.join(map(str, f.get('operations', [])))})"
        for f in failures
    )
    titles += [f"error: {e.get('title', '')}" for e in result.get("errors", [])]
    return Outcome(
        function=name,
        operations=int(result["operations"]["tested"]),
        cases=int(result["test_cases"]["generated"]),
        failures=int(result["test_cases"]["unique_failures"]),
        errors=len(result.get("errors", [])),
        seconds=seconds,
        failure_titles=titles,
    )


def table(outcomes: list[Outcome]) -> str:
    row = "{:<12} {:>10} {:>7} {:>8} {:>6} {:>8}"
    lines = [row.format("function", "operations", "cases", "failures", "errors", "seconds")]
    for o in outcomes:
        lines.append(row.format(o.function, o.operations, o.cases, o.failures, o.errors, o.seconds))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-examples", type=int, default=0, help="per operation (0: enough for --min-cases per function)"
    )
    parser.add_argument("--min-cases", type=int, default=1000, help="fewer generated cases is a failure")
    parser.add_argument("--seed", type=int, default=17)
    # One worker: hypothesis' lambda descriptions are not thread-safe on Python 3.11 (schemathesis reports
    # "AST constructor recursion depth mismatch" with more).
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", action="append", help="a function's name (repeatable)")
    parser.add_argument("--deterministic", action="store_true", help="the same cases on every run")
    args = parser.parse_args(argv)
    config = load_emulator_config()
    started = localcloud.start(config)
    try:
        gateway = config.emulators.functions.url
        RESULTS_DIR.mkdir(exist_ok=True)
        key = fuzz_key(f"fuzz-{uuid.uuid4().hex[:10]}")
        outcomes = []
        for name, api in public_apis().items():
            if args.only and name not in args.only:
                continue
            fuzzed = sum(1 for route in api.routes if not route.streaming)
            outcome = fuzz_one(
                name=name,
                api=api,
                gateway=gateway,
                key=key,
                max_examples=args.max_examples or math.ceil(1.2 * args.min_cases / fuzzed),
                seed=args.seed,
                workers=args.workers,
                deterministic=args.deterministic,
            )
            outcomes.append(outcome)
            sys.stdout.write(
                f"{name}: {outcome.cases} cases, {outcome.failures} failures ({outcome.seconds} s)\n"
            )
            for title in outcome.failure_titles:
                sys.stdout.write(f"  {title}\n")
            sys.stdout.flush()
    finally:
        if started:
            localcloud.stop()
    (RESULTS_DIR / "results.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    sys.stdout.write(table(outcomes))
    short = [o.function for o in outcomes if o.cases < args.min_cases]
    if short:
        sys.stdout.write(f"fewer than {args.min_cases} cases: {', '.join(short)}\n")
    bad = any(o.failures or o.errors for o in outcomes) or bool(short) or not outcomes
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
