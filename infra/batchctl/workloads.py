"""Embeddings collections (index, search), text analysis and the catalog's image queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from infra.batchctl import render
from infra.batchctl.batches import end_of_watch, watch_batch
from infra.batchctl.client import Api, CliError
from infra.batchctl.requests_file import json_lines
from infra.batchctl.session import F, json_option, pass_api

ANALYSIS_TYPES = ("sentiment", "summary", "keywords", "entities", "classification", "language")
SHOWN_RESULTS = 20


def _watch_flag(command: F) -> F:
    """--watch by default: indexing and analysis are followed to their results unless --no-watch."""
    command = click.option(
        "--interval",
        type=click.FloatRange(min=0.1),
        default=0.5,
        show_default=True,
        help="seconds between polls",
    )(command)
    return click.option(
        "--watch/--no-watch",
        default=True,
        show_default=True,
        help="follow it until it ends, then show the results",
    )(command)


def _finish(api: Api, answer: dict[str, Any], *, watch: bool, interval: float) -> dict[str, Any] | None:
    """Watch a submitted batch to its end and return its first results page, or print how to follow it."""
    batch_id = str(answer["batchId"])
    if not watch:
        render.emit(
            answer, lambda out: out.print(f"submitted {batch_id}; follow it: batchctl watch {batch_id}")
        )
        return None
    if render.is_json():
        render.emit(answer, lambda out: None)
    final = watch_batch(api, batch_id, interval=interval)
    if final.get("status") != "completed":
        end_of_watch(final)
    page = api.get(f"/batch/status/{batch_id}", offset=0, limit=SHOWN_RESULTS)
    return page


@click.group()
def embed() -> None:
    """Embeddings collections: index documents, search them."""


def _documents(path: Path) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for number, value in json_lines(path):
        if isinstance(value, str):
            value = {"text": value}
        if not isinstance(value, dict) or "text" not in value:
            raise CliError(
                f'line {number}: a document is {{"text", "metadata"}} or a JSON string', exit_code=2
            )
        documents.append(value)
    if not documents:
        raise CliError(f"{path} holds no document", exit_code=2)
    return documents


def _embedding_options(model: str | None, dimension: int | None, wait: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"wait": wait}
    if model:
        options["model"] = model
    if dimension:
        options["outputDimensionality"] = dimension
    return options


@embed.command(name="index")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", help="embedding model (the collection keeps the one it was made with)")
@click.option("--dimension", type=click.IntRange(1, 2048), help="outputDimensionality")
@_watch_flag
@json_option
@pass_api
def embed_index(
    api: Api, *, name: str, file: Path, model: str | None, dimension: int | None, watch: bool, interval: float
) -> None:
    """Index FILE.jsonl (lines {"text", "metadata"}; metadata.id is the document id) into collection NAME."""
    body = {
        "operations": [{"type": "index", "name": name, "documents": _documents(file)}],
        "options": _embedding_options(model, dimension, False),
    }
    page = _finish(api, api.post("/batch/embeddings", body), watch=watch, interval=interval)
    if page is None:
        return
    result = (page.get("results") or [{}])[0]
    render.emit(page, lambda out: out.print(f"indexed {result.get('indexed', 0)} documents into {name}"))


def _filter_value(raw: str) -> str | int | float | bool:
    if raw in ("true", "false"):
        return raw == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            continue
    return raw


@embed.command(name="search")
@click.argument("name")
@click.argument("query")
@click.option("--top-k", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="metadata equality filter")
@click.option("--model")
@click.option("--dimension", type=click.IntRange(1, 2048))
@json_option
@pass_api
def embed_search(
    api: Api,
    *,
    name: str,
    query: str,
    top_k: int,
    filters: tuple[str, ...],
    model: str | None,
    dimension: int | None,
) -> None:
    """Search collection NAME for QUERY: the best matches with their cosine similarity."""
    where: dict[str, Any] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--filter {item}: expected KEY=VALUE", exit_code=2)
        where[key] = _filter_value(value)
    operation = {"type": "search", "name": name, "query": query, "topK": top_k, "filter": where}
    answer = api.post(
        "/batch/embeddings",
        {"operations": [operation], "options": _embedding_options(model, dimension, True)},
    )
    if answer.get("results") is None:
        answer = _finish(api, answer, watch=True, interval=0.5) or answer
    result = (answer.get("results") or [{}])[0]
    if result.get("success") is False:
        raise CliError(f"search failed: {(result.get('error') or {}).get('message', 'unknown error')}")
    matches = result.get("matches") or []

    def draw(out: Console) -> None:
        rows = [
            (
                f"{m.get('score', 0):.4f}",
                m.get("id"),
                render.short(m.get("text"), 70),
                json.dumps(m.get("metadata") or {}),
            )
            for m in matches
        ]
        out.print(
            render.table(f"{len(matches)} matches in {name}", ["score", "id", "text", "metadata"], rows)
        )

    render.emit(result, draw)


def _analysis_cell(analysis: dict[str, Any]) -> str:
    """The headline of one analysis, whatever its type."""
    for key in ("label", "category", "language", "summary"):
        if key in analysis:
            score = f" ({analysis['score']})" if key == "label" and "score" in analysis else ""
            return render.short(f"{analysis[key]}{score}", 60)
    if "keywords" in analysis:
        return ", ".join(str(k.get("term")) for k in analysis["keywords"][:6])
    if "entities" in analysis:
        return ", ".join(f"{e.get('text')} ({e.get('type')})" for e in analysis["entities"][:6])
    return render.short(json.dumps(analysis), 60)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--type", "analysis_type", type=click.Choice(ANALYSIS_TYPES), required=True)
@click.option("--categories", help="comma-separated categories (classification)")
@click.option("--confidence", is_flag=True, help="includeConfidence")
@click.option("--detailed", is_flag=True, help="detailedAnalysis")
@click.option("--model")
@_watch_flag
@json_option
@pass_api
def analyze(
    api: Api,
    *,
    file: Path,
    analysis_type: str,
    categories: str | None,
    confidence: bool,
    detailed: bool,
    model: str | None,
    watch: bool,
    interval: float,
) -> None:
    """Analyze FILE (one text a line): sentiment, summary, keywords, entities, classification or language."""
    texts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise CliError(f"{file} holds no text", exit_code=2)
    options: dict[str, Any] = {"wait": False, "includeConfidence": confidence, "detailedAnalysis": detailed}
    if categories:
        options["categories"] = [c.strip() for c in categories.split(",") if c.strip()]
    if model:
        options["model"] = model
    body = {"texts": texts, "analysisType": analysis_type, "options": options}
    page = _finish(api, api.post("/batch/analyze", body), watch=watch, interval=interval)
    if page is None:
        return
    shown = page.get("results", [])

    def draw(out: Console) -> None:
        rows = [
            (
                r.get("index"),
                render.short(texts[r["index"]], 50),
                r.get("status"),
                _analysis_cell(r.get("analysis") or {}),
            )
            for r in shown
        ]
        out.print(
            render.table(f"{analysis_type} of {len(texts)} texts", ["#", "text", "status", "analysis"], rows)
        )
        if len(texts) > len(shown):
            out.print(f"all of them: batchctl results {page.get('batchId')} -o analysis.jsonl")

    render.emit(page, draw)


@click.group()
def images() -> None:
    """The catalog's image-processing queue (/articulos)."""


@images.command(name="add")
@click.argument("articulo_ids", nargs=-1, type=click.IntRange(min=1), required=True)
@click.option("--priority", type=click.IntRange(-1000, 1000), default=0, show_default=True, help="prioridad")
@json_option
@pass_api
def images_add(api: Api, *, articulo_ids: tuple[int, ...], priority: int) -> None:
    """Queue the images of articles ARTICULO_IDS, higher priority first."""
    body = api.post(
        "/articulos/batch-process-images", {"articuloIds": list(articulo_ids), "prioridad": priority}
    )
    data = body.get("data") or {}
    details = data.get("detalles") or {}

    def draw(out: Console) -> None:
        out.print(f"{data.get('agregados', 0)} queued, {data.get('omitidos', 0)} skipped")
        rows = [(a.get("articuloId"), "queued", a.get("queueId")) for a in details.get("agregados", [])]
        rows += [(o.get("articuloId"), "skipped", o.get("motivo")) for o in details.get("omitidos", [])]
        out.print(render.table(None, ["article", "", "queue id / reason"], rows))

    render.emit(body, draw)


def _queue_snapshot(api: Api) -> render.Snapshot:
    body = api.get("/articulos/processing-queue/status")
    stats = (body.get("data") or {}).get("stats") or {}
    done = int(stats.get("completados", 0)) + int(stats.get("fallidos", 0))
    busy = int(stats.get("pendientes", 0)) + int(stats.get("procesando", 0))
    return render.Snapshot(
        done=done,
        failed=int(stats.get("fallidos", 0)),
        total=int(stats.get("total", 0)),
        status=f"{stats.get('pendientes', 0)} pending, {stats.get('procesando', 0)} processing",
        final=busy == 0,
        payload=body,
    )


def _show_queue(out: Console, body: dict[str, Any]) -> None:
    data = body.get("data") or {}
    stats = data.get("stats") or {}
    out.print(
        render.fields(
            (key, stats.get(key, 0))
            for key in ("pendientes", "procesando", "completados", "fallidos", "total")
        )
    )
    current = data.get("articulosActuales") or []
    if current:
        rows = [
            (
                c.get("id"),
                c.get("articulo_id"),
                c.get("articulo_nombre"),
                c.get("intentos"),
                c.get("segundos_procesando"),
            )
            for c in current
        ]
        out.print(render.table("in progress", ["queue id", "article", "name", "attempt", "seconds"], rows))


@images.command(name="status")
@click.option("--watch", is_flag=True, help="follow the queue until nothing is pending or processing")
@click.option("--interval", type=click.FloatRange(min=0.1), default=0.5, show_default=True)
@json_option
@pass_api
def images_status(api: Api, *, watch: bool, interval: float) -> None:
    """The queue's counts and the items in progress."""
    if watch:
        body = render.follow(
            poll=lambda: _queue_snapshot(api), label="image queue", interval=interval
        ).payload
    else:
        body = api.get("/articulos/processing-queue/status")
    render.emit(body, lambda out: _show_queue(out, body))
