"""Engine batches of every kind: submit, watch, status, ls, cancel, results, and the credits balance."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console

from infra.batchctl import render
from infra.batchctl.client import Api, dumps
from infra.batchctl.requests_file import translate
from infra.batchctl.session import json_option, pass_api, watch_options

FINAL = {"completed", "failed", "cancelled"}
RESULTS_PAGE = 500  # results per status call while streaming (the server's page is at most 1,000)
EXIT_NOT_COMPLETED = 3
# A batch whose state is final but whose results file is not written yet is watched this much longer.
FAN_IN_GRACE_SECONDS = 15.0


def batch_snapshot(api: Api, batch_id: str) -> render.Snapshot:
    body = api.get(f"/batch/status/{batch_id}", offset=0, limit=1)
    progress = body.get("progress") or kind_progress(body)
    return render.Snapshot(
        done=int(progress.get("finished", 0)),
        failed=int(progress.get("failed", 0)),
        total=int(progress.get("total", 0)),
        status=str(body.get("status")),
        final=body.get("status") in FINAL,
        payload=body,
    )


def kind_progress(body: dict[str, Any]) -> dict[str, Any]:
    """The progress of a kind that shapes its own status (Gemini Batch Mode jobs: the seed's counts)."""
    succeeded, failed = int(body.get("successCount") or 0), int(body.get("failCount") or 0)
    return {"finished": succeeded + failed, "failed": failed, "total": int(body.get("requestCount") or 0)}


def watch_batch(api: Api, batch_id: str, *, interval: float, label: str | None = None) -> dict[str, Any]:
    """Follow a batch until it ends and its results file is written (or a short grace after it ends)."""
    ended_at: list[float] = []  # when the batch was first seen final

    def poll() -> render.Snapshot:
        shot = batch_snapshot(api, batch_id)
        if not shot.final:
            return shot
        if not ended_at:
            ended_at.append(time.monotonic())
        shaped_by_kind = "progress" not in shot.payload  # no results file to wait for
        if (
            shaped_by_kind
            or shot.payload.get("resultsUrl")
            or time.monotonic() - ended_at[0] > FAN_IN_GRACE_SECONDS
        ):
            return shot
        return dataclasses.replace(shot, final=False)

    final = render.follow(poll=poll, label=label or f"batch {batch_id}", interval=interval)
    body = dict(final.payload)
    body.pop("results", None)
    body.pop("pagination", None)
    return body


def show_status(out: Console, body: dict[str, Any]) -> None:
    if "progress" not in body:  # a kind that shapes its own status: its plain fields as they are
        out.print(render.fields((k, v) for k, v in body.items() if not isinstance(v, dict | list)))
        return
    progress = body["progress"]
    tokens = body.get("tokens", {})
    out.print(
        render.fields(
            [
                ("batch", body.get("batchId")),
                ("kind", body.get("kind")),
                ("status", body.get("status")),
                (
                    "progress",
                    f"{progress.get('finished', 0)}/{progress.get('total', 0)} "
                    f"({progress.get('percent', 0)} %), {progress.get('successful', 0)} succeeded, "
                    f"{progress.get('failed', 0)} failed, {progress.get('pending', 0)} pending, "
                    f"{progress.get('cancelled', 0)} cancelled",
                ),
                ("created", body.get("createdAt")),
                ("finished", body.get("finishedAt")),
                ("stop reason", body.get("stopReason")),
                (
                    "tokens",
                    f"{tokens.get('total', 0)} (input {tokens.get('input', 0)}, "
                    f"output {tokens.get('output', 0)})",
                ),
                ("cost", f"{body.get('costUsd', 0)} USD"),
                (
                    "results",
                    body.get("resultsUrl") and f"batchctl results {body.get('batchId')} -o results.jsonl",
                ),
            ]
        )
    )


def end_of_watch(body: dict[str, Any]) -> None:
    render.emit(body, lambda out: show_status(out, body))
    if body.get("status") != "completed":
        raise click.exceptions.Exit(EXIT_NOT_COMPLETED)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--collection", help="collection for OpenAI /v1/embeddings lines")
@click.option("--concurrency", type=click.IntRange(min=1), help="requests run at once (options.concurrency)")
@click.option("--idempotency-key", help="the same key and file return the same batch")
@watch_options
@json_option
@pass_api
def submit(
    api: Api,
    *,
    file: Path,
    collection: str | None,
    concurrency: int | None,
    idempotency_key: str | None,
    watch: bool,
    interval: float,
) -> None:
    """Submit FILE.jsonl (OpenAI Batch input lines or the platform's own) as one batch."""
    options: dict[str, Any] = {"wait": False}
    if concurrency:
        options["concurrency"] = concurrency
    translated = translate(file, collection=collection, options=options)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    answer = api.request("POST", f"/batch/{translated.kind}", json_body=translated.body, headers=headers)
    batch_id = str(answer["batchId"])
    if not render.is_json():
        out = render.console()
        for note in translated.notes:
            out.print(f"[yellow]note:[/] {note}")
        out.print(f"submitted [bold]{batch_id}[/] ({translated.kind}, {translated.lines} lines)")
    if not watch:
        render.emit(answer, lambda out: out.print(f"follow it: batchctl watch {batch_id}"))
        return
    if render.is_json():
        click.echo(dumps(answer))
    end_of_watch(watch_batch(api, batch_id, interval=interval))


@click.command()
@click.argument("batch_id")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=0.5, show_default=True, help="seconds between polls"
)
@json_option
@pass_api
def watch(api: Api, *, batch_id: str, interval: float) -> None:
    """A progress bar (done, failed, rate, ETA) until the batch ends; exit 3 unless it completed."""
    end_of_watch(watch_batch(api, batch_id, interval=interval))


@click.command()
@click.argument("batch_id")
@json_option
@pass_api
def status(api: Api, *, batch_id: str) -> None:
    """A batch's status, progress, tokens and cost."""
    body = api.get(f"/batch/status/{batch_id}", offset=0, limit=1)
    body.pop("results", None)
    body.pop("pagination", None)
    render.emit(body, lambda out: show_status(out, body))


@click.command()
@click.argument("batch_id")
@json_option
@pass_api
def cancel(api: Api, *, batch_id: str) -> None:
    """Cancel a batch: nothing new starts, finished results are kept."""
    body = api.delete(f"/batch/{batch_id}")
    render.emit(body, lambda out: out.print(f"{body.get('batchId')}: {body.get('status')}"))


@click.command(name="ls")
@click.option("--kind", help="generate, embeddings, analyze, report, images, metrics")
@click.option("--status", "status_filter", help="queued, running, completed, failed, cancelled")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--cursor", help="nextCursor of a previous page")
@json_option
@pass_api
def list_jobs(
    api: Api, *, kind: str | None, status_filter: str | None, limit: int, cursor: str | None
) -> None:
    """Recent jobs of every kind, newest first."""
    body = api.get("/batch/jobs", kind=kind, status=status_filter, limit=limit, cursor=cursor)
    jobs = body.get("jobs", [])

    def draw(out: Console) -> None:
        rows = []
        for job in jobs:
            # The status endpoint's progress block; the flat keys are the listing's first announced shape.
            progress = job.get("progress") or {}
            done = progress.get("finished", job.get("completed", 0))
            total = progress.get("total", job.get("total", 0))
            failed = progress.get("failed", job.get("failed", 0))
            percent = progress.get("percent", job.get("percentage", 0))
            rows.append(
                (
                    job.get("batchId"),
                    job.get("kind"),
                    job.get("status"),
                    f"{done}/{total}",
                    failed,
                    f"{percent} %",
                    render.when(job.get("createdAt")),
                )
            )
        out.print(render.table(None, ["batch", "kind", "status", "done", "failed", "%", "created"], rows))
        if body.get("nextCursor"):
            out.print(f"more: batchctl ls --cursor {body['nextCursor']}")

    render.emit(body, draw)


def result_line(result: Any, index: int) -> dict[str, Any]:
    """A result keyed by its custom_id (an embeddings index operation: its first document id)."""
    if not isinstance(result, dict):  # a kind that shapes its own results (Batch Mode: an image URL or null)
        return {"custom_id": None, "index": index, "result": result}
    custom_id = result.get("customId")
    if custom_id is None and result.get("documentIds"):
        custom_id = result["documentIds"][0] if len(result["documentIds"]) == 1 else None
    return {"custom_id": custom_id, **result}


def stream_results(api: Api, batch_id: str, *, out: IO[str], page: int) -> tuple[int, str]:
    """Write the batch's results in request order, one page at a time; (lines written, batch status)."""
    offset: int | None = 0
    written = 0
    state = ""
    while offset is not None:
        body = api.get(f"/batch/status/{batch_id}", offset=offset, limit=page)
        state = str(body.get("status"))
        for result in body.get("results") or []:
            out.write(json.dumps(result_line(result, written), ensure_ascii=False) + "\n")
            written += 1
        offset = (body.get("pagination") or {}).get("nextOffset")
    return written, state


@click.command()
@click.argument("batch_id")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="JSONL file (default stdout)"
)
@click.option("--page", type=click.IntRange(1, 1000), default=RESULTS_PAGE, show_default=True)
@json_option
@pass_api
def results(api: Api, *, batch_id: str, output: Path | None, page: int) -> None:
    """Stream a batch's results as JSONL, in request order, keyed by custom_id."""
    if output is None or str(output) == "-":
        written, state = stream_results(api, batch_id, out=sys.stdout, page=page)
    else:
        partial = output.with_name(output.name + ".partial")
        with partial.open("w", encoding="utf-8") as target:
            written, state = stream_results(api, batch_id, out=target, page=page)
        partial.replace(output)
        summary = {"batchId": batch_id, "status": state, "lines": written, "output": str(output)}
        render.emit(summary, lambda out: out.print(f"{written} results of {batch_id} ({state}) -> {output}"))
    if state not in FINAL:
        click.echo(
            f"warning: batch {batch_id} is {state}: unfinished requests are written as pending", err=True
        )


@click.command()
@json_option
@pass_api
def credits(api: Api) -> None:
    """The tenant's credits balance and its latest ledger entries (Gemini Batch Mode jobs)."""
    body = api.get("/batch/credits")

    def draw(out: Console) -> None:
        out.print(
            render.fields([("tenant", body.get("tenant")), ("balance", f"{body.get('balance')} credits")])
        )
        entries: list[dict[str, Any]] = body.get("entries") or []
        if not entries:
            out.print("no ledger entries yet")
            return
        # Issue 14's entries; any other key the server adds is shown after them.
        known = ["at", "kind", "amount", "reason", "jobId"]
        columns = [c for c in known if any(c in e for e in entries)]
        columns += [c for c in dict.fromkeys(k for e in entries for k in e) if c not in known and c != "id"]
        rows = [[render.short(entry.get(c, ""), 50) for c in columns] for entry in entries]
        out.print(render.table("latest ledger entries", columns, rows))

    render.emit(body, draw)
