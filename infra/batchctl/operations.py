"""Reports (upload session, job, download), metric runs and calculated metrics, and the analytics summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from infra.batchctl import render
from infra.batchctl.batches import EXIT_NOT_COMPLETED
from infra.batchctl.client import Api, CliError
from infra.batchctl.session import json_option, pass_api, watch_options

CHUNK_UNIT = 256 * 1024  # Cloud Storage wants resumable chunks in multiples of 256 KiB
REPORT_FINAL = {"Completed", "Failed"}
DAY_JOBS = {"daily_metrics_batch": ("daily", "fecha"), "weekly_metrics_batch": ("weekly", "fecha_fin")}


def _byte_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=render.console(),
        disable=render.is_json(),
    )


def upload_file(api: Api, *, url: str, path: Path, chunk_bytes: int) -> None:
    """Write `path` into the resumable session at `url`, chunk by chunk, with a byte progress bar."""
    total = path.stat().st_size
    with path.open("rb") as source, _byte_bar() as bar:
        task = bar.add_task(f"upload {path.name}", total=total)
        offset = 0
        while offset < total:
            data = source.read(chunk_bytes)
            code = api.put_chunk(url, data=data, start=offset, total=total)
            offset += len(data)
            bar.update(task, completed=offset)
            if code != 308 and offset < total:
                raise CliError(f"Cloud Storage closed the upload at byte {offset} of {total}")


def _report_snapshot(api: Api, job_id: str) -> render.Snapshot:
    body = api.get(f"/reports/status/{job_id}")
    state = str(body.get("status"))
    progress = body.get("progress") or {}
    percent = 100 if state in REPORT_FINAL else int(progress.get("percent") or 0)
    return render.Snapshot(
        done=percent,
        failed=1 if state == "Failed" else 0,
        total=100,
        status=f"{state} {progress.get('recordsRead', '')}".strip(),
        final=state in REPORT_FINAL,
        payload=body,
    )


def _show_report(out: Console, body: dict[str, Any]) -> None:
    metrics = body.get("performanceMetrics") or {}
    out.print(
        render.fields(
            [
                ("job", body.get("jobId")),
                ("status", body.get("status")),
                ("message", body.get("message")),
                ("type", body.get("reportType")),
                ("records", metrics.get("recordsProcessed")),
                ("invalid", body.get("recordsInvalid")),
                ("time", metrics.get("processingTimeMs") and f"{metrics['processingTimeMs']} ms"),
                ("file", body.get("fileName") and f"{body['fileName']} ({body.get('fileSizeBytes')} bytes)"),
                ("download", body.get("downloadUrl")),
            ]
        )
    )


def download_report(api: Api, body: dict[str, Any], *, output: Path | None) -> Path:
    url = body.get("downloadUrl")
    if not url:
        raise CliError(f"report {body.get('jobId')} has no file to download ({body.get('status')})")
    target = output or Path(str(body.get("fileName") or f"{body.get('jobId')}.zip"))
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out, _byte_bar() as bar:
        task = bar.add_task(f"download {target.name}", total=body.get("fileSizeBytes"))
        for count in api.download(str(url), out=out):
            bar.advance(task, count)
    partial.replace(target)
    return target


@click.group()
def reports() -> None:
    """Asynchronous reports over large JSON datasets (/reports)."""


@reports.command(name="upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--type", "report_type", required=True, help="FacturacionMasiva, VentasPorCiudad")
@click.option("--user", "user_name", default="batchctl", show_default=True, help="userName of the job")
@click.option(
    "--chunk-mb", type=click.IntRange(1, 256), default=8, show_default=True, help="upload chunk size"
)
@click.option("--download", is_flag=True, help="once completed, download the report (implies --watch)")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="where --download writes"
)
@watch_options
@json_option
@pass_api
def reports_upload(
    api: Api,
    *,
    file: Path,
    report_type: str,
    user_name: str,
    chunk_mb: int,
    download: bool,
    output: Path | None,
    watch: bool,
    interval: float,
) -> None:
    """Upload FILE through a resumable upload session (straight to Cloud Storage) and queue a report of it."""
    size = file.stat().st_size
    if size == 0:
        raise CliError(f"{file} is empty", exit_code=2)
    session = api.post(
        "/reports/uploads", {"fileName": file.name, "sizeBytes": size, "reportType": report_type}
    )
    upload_file(
        api,
        url=str(session["uploadUrl"]),
        path=file,
        chunk_bytes=chunk_mb * 1024 * 1024 // CHUNK_UNIT * CHUNK_UNIT,
    )
    queued = api.post(
        "/reports/queue", {"reportType": report_type, "userName": user_name, "uploadId": session["uploadId"]}
    )
    job_id = str(queued["jobId"])
    if not (watch or download):
        render.emit(
            queued,
            lambda out: out.print(f"queued report {job_id}; follow it: batchctl reports status {job_id}"),
        )
        return
    if render.is_json():
        render.emit(queued, lambda out: None)
    body = render.follow(
        poll=lambda: _report_snapshot(api, job_id), label=f"report {job_id}", interval=interval, unit="%"
    ).payload
    if body.get("status") == "Completed" and download:
        body = {**body, "downloadedTo": str(download_report(api, body, output=output))}
    render.emit(body, lambda out: _show_report(out, body))
    if body.get("status") != "Completed":
        raise click.exceptions.Exit(EXIT_NOT_COMPLETED)


@reports.command(name="status")
@click.argument("job_id")
@click.option("--download", is_flag=True, help="download the report's file")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_api
def reports_status(api: Api, *, job_id: str, download: bool, output: Path | None) -> None:
    """A report job's status (and its file with --download)."""
    body = api.get(f"/reports/status/{job_id}")
    if download:
        body = {**body, "downloadedTo": str(download_report(api, body, output=output))}
    render.emit(body, lambda out: _show_report(out, body))


@click.group()
def metrics() -> None:
    """Scheduled metric batches of the marketplace (/dashboards)."""


def _run_snapshot(api: Api, run_id: str) -> render.Snapshot:
    run = api.get(f"/dashboards/batch-jobs/runs/{run_id}")
    states = [m.get("status") for m in (run.get("metrics") or {}).values()]
    return render.Snapshot(
        done=sum(1 for s in states if s in ("completed", "failed", "metric_failed")),
        failed=sum(1 for s in states if s in ("failed", "metric_failed")),
        total=len(states),
        status=str(run.get("status")),
        final=run.get("status") != "running",
        payload={"run": run},
    )


def _show_run(out: Console, body: dict[str, Any]) -> None:
    run = body.get("run") or {}
    if body.get("action"):
        out.print(f"{body['action']}: run {run.get('runId')}")
    out.print(
        render.fields(
            [
                ("job", run.get("jobId")),
                ("period", f"{run.get('periodStart')} .. {run.get('periodEnd')}"),
                ("status", run.get("status")),
                ("records read", run.get("recordsRead")),
                ("duration", run.get("durationS") and f"{run['durationS']} s"),
            ]
        )
    )
    rows = [
        (n, m.get("status"), m.get("records"), m.get("durationMs"), m.get("error"))
        for n, m in (run.get("metrics") or {}).items()
    ]
    if rows:
        out.print(render.table(None, ["metric", "status", "records", "ms", "error"], rows))


@metrics.command(name="trigger")
@click.argument("job_id")
@click.option("--fecha", help="the local day to run (YYYY-MM-DD; the weekly job's last day)")
@watch_options
@json_option
@pass_api
def metrics_trigger(api: Api, *, job_id: str, fecha: str | None, watch: bool, interval: float) -> None:
    """Start a run of JOB_ID now (admin key): its default period, or the day --fecha."""
    if fecha is None:
        body = api.post(f"/dashboards/batch-jobs/trigger/{job_id}")
    elif job_id in DAY_JOBS:
        path, parameter = DAY_JOBS[job_id]
        body = api.post(f"/dashboards/batch-jobs/{path}", **{parameter: fecha})
    else:
        raise CliError(f"--fecha applies to {' and '.join(DAY_JOBS)}, not {job_id}", exit_code=2)
    run_id = (body.get("run") or {}).get("runId")
    if watch and run_id:
        if render.is_json():
            render.emit(body, lambda out: None)
        final = render.follow(
            poll=lambda: _run_snapshot(api, str(run_id)),
            label=f"run {run_id}",
            interval=interval,
            unit="metrics",
        )
        body = {**body, **final.payload}
    render.emit(body, lambda out: _show_run(out, body))
    if watch and (body.get("run") or {}).get("status") not in ("completed", None):
        raise click.exceptions.Exit(EXIT_NOT_COMPLETED)


@metrics.command(name="show")
@click.argument("nombre_metrica")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--desde", help="first local day (YYYY-MM-DD)")
@click.option("--hasta", help="last local day (YYYY-MM-DD)")
@click.option("--dimension", help="key:value, e.g. ciudad:Cali")
@click.option("--cursor", help="nextCursor of a previous page")
@json_option
@pass_api
def metrics_show(
    api: Api,
    *,
    nombre_metrica: str,
    limit: int,
    desde: str | None,
    hasta: str | None,
    dimension: str | None,
    cursor: str | None,
) -> None:
    """The latest calculated values of a metric, newest period first."""
    body = api.get(
        "/dashboards/metrics/calculated",
        nombre_metrica=nombre_metrica,
        limit=limit,
        desde=desde,
        hasta=hasta,
        dimension=dimension,
        cursor=cursor,
    )
    rows_in = [_metric_row(m) for m in body.get("metricas", [])]
    columns = list(dict.fromkeys(key for row in rows_in for key in row))[:10]

    def draw(out: Console) -> None:
        if not rows_in:
            out.print(f"no calculated values of {nombre_metrica} (run one: batchctl metrics trigger ...)")
            return
        rows = [[render.short(row.get(c, ""), 30) for c in columns] for row in rows_in]
        out.print(render.table(f"{nombre_metrica}: {body.get('count', len(rows))}", columns, rows))
        if body.get("nextCursor"):
            out.print(f"more: batchctl metrics show {nombre_metrica} --cursor {body['nextCursor']}")

    render.emit(body, draw)


def _metric_row(metrica: dict[str, Any]) -> dict[str, Any]:
    """periodo, valor, then the dimensions: the columns worth a glance."""
    row: dict[str, Any] = {
        "periodo": str(metrica.get("periodo_inicio", ""))[:10],
        "valor": metrica.get("valor"),
    }
    dimensions = metrica.get("dimensiones")
    if isinstance(dimensions, dict):
        row.update({k: v for k, v in dimensions.items() if not isinstance(v, dict | list)})
    return row


@click.command()
@click.option("--from", "since", help="RFC 3339 start (default: the last 24 h)")
@click.option("--to", "until", help="RFC 3339 end")
@click.option("--tenant", help="one tenant (admin key)")
@json_option
@pass_api
def analytics(api: Api, *, since: str | None, until: str | None, tenant: str | None) -> None:
    """One screen: calls, success, latency percentiles, tokens, cost, cache, and the insights."""
    window = {"from": since, "to": until, "tenant": tenant}
    figures = api.get("/analytics/metrics", **window).get("metrics", {})
    insights = api.get("/analytics/insights", **window).get("insights", {})
    render.emit(
        {"metrics": figures, "insights": insights}, lambda out: _show_analytics(out, figures, insights)
    )


def _show_analytics(out: Console, figures: dict[str, Any], insights: dict[str, Any]) -> None:
    requests = figures.get("requests", {})
    latency = figures.get("performance", {})
    usage = figures.get("usage", {})
    cache = figures.get("cache", {})
    out.print(
        render.fields(
            [
                (
                    "calls",
                    f"{requests.get('total', 0)} ({requests.get('successful', 0)} ok, "
                    f"{requests.get('failed', 0)} failed, {requests.get('successRate', 0)} % success)",
                ),
                (
                    "latency ms",
                    ", ".join(
                        f"{name} {latency.get(key, 0)}"
                        for name, key in (
                            ("avg", "averageResponseTime"),
                            ("p50", "p50ResponseTime"),
                            ("p95", "p95ResponseTime"),
                            ("p99", "p99ResponseTime"),
                        )
                    ),
                ),
                (
                    "tokens",
                    f"{usage.get('totalTokens', 0)} (input {usage.get('inputTokens', 0)}, "
                    f"output {usage.get('outputTokens', 0)})",
                ),
                ("cost", f"{usage.get('estimatedCost', 0)} USD"),
                ("cache", f"{cache.get('hits', 0)} hits, {cache.get('hitRate', 0)} % hit rate"),
            ]
        )
    )
    by_model = requests.get("byModel") or {}
    by_endpoint = requests.get("byEndpoint") or {}
    if by_model or by_endpoint:
        rows = [("model", k, v) for k, v in by_model.items()] + [
            ("endpoint", k, v) for k, v in by_endpoint.items()
        ]
        out.print(render.table(None, ["by", "name", "calls"], rows))
    performance = insights.get("performance", {})
    use = insights.get("usage", {})
    errors = insights.get("errors", {})
    out.print(
        render.fields(
            [
                ("performance", f"{performance.get('status')}: {performance.get('message', '')}"),
                ("trend", use.get("trend")),
                ("peak hours", ", ".join(use.get("peakHours") or []) or "-"),
                ("most common error", errors.get("mostCommon")),
            ]
        )
    )
    advice = [
        *(performance.get("recommendations") or []),
        *(use.get("costOptimization") or []),
        *(errors.get("suggestions") or []),
    ]
    for line in advice:
        out.print(f"  • {line if isinstance(line, str) else render.short(line, 100)}")
