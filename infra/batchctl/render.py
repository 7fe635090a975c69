"""Output: JSON for machines, Rich tables and progress bars for people."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from infra.batchctl.client import CliError, dumps

# Off a terminal (a pipe, a file, a test) Rich assumes 80 columns, which folds ids and squeezes the bar.
PIPE_WIDTH = 160


def console() -> Console:
    drawn = Console(highlight=False, soft_wrap=False)
    if not drawn.is_terminal and "COLUMNS" not in os.environ:
        drawn.width = PIPE_WIDTH
    return drawn


def is_json() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().meta.get("json"))


def emit(payload: Any, render: Callable[[Console], None]) -> None:
    """The payload as one JSON document with --json, otherwise what `render` draws."""
    if is_json():
        click.echo(dumps(payload))
    else:
        render(console())


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    drawn = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        drawn.add_column(column, overflow="fold")
    for row in rows:
        drawn.add_row(*("" if value is None else str(value) for value in row))
    return drawn


def fields(pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column key/value grid."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(key, "-" if value is None else str(value))
    return grid


def when(stamp: Any) -> str:
    """An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` (UTC), for tables."""
    text = str(stamp or "")
    return text[:19].replace("T", " ") if len(text) >= 19 else text or "-"


def short(text: Any, width: int = 60) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One poll of something that progresses: counts, whether it ended, and the raw answer."""

    done: int  # finished, failed ones included
    failed: int
    total: int
    status: str
    final: bool
    payload: dict[str, Any]


def follow(*, poll: Callable[[], Snapshot], label: str, interval: float, unit: str = "items") -> Snapshot:
    """Poll until the snapshot is final: a Rich bar (done, failed, rate, ETA), or JSON lines with --json.
    Ctrl-C stops watching, never the job."""
    try:
        return _follow(poll=poll, label=label, interval=interval, unit=unit)
    except KeyboardInterrupt:
        raise CliError(f"stopped watching {label} (the job goes on)", exit_code=130) from None


def _follow(*, poll: Callable[[], Snapshot], label: str, interval: float, unit: str) -> Snapshot:
    started = time.monotonic()
    first = poll()
    if is_json():
        return _follow_json(poll=poll, first=first, interval=interval)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TextColumn("{task.fields[status]}"),
    )
    out = console()
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task(label, total=max(first.total, 1), failed=0, rate="-", eta="-", status="")
        current = first
        while True:
            elapsed = time.monotonic() - started
            gained = current.done - first.done
            rate = gained / elapsed if elapsed > 0 and gained > 0 else 0.0
            eta = (current.total - current.done) / rate if rate else None
            bar.update(
                task,
                total=max(current.total, 1),
                completed=current.done,
                failed=current.failed,
                rate=f"{rate:.1f} {unit}/s" if rate else f"- {unit}/s",
                eta="0:00" if current.final else duration(eta),
                status=current.status,
            )
            if current.final:
                break
            time.sleep(interval)  # the polling interval the user asked for
            current = poll()
    return current


def _follow_json(*, poll: Callable[[], Snapshot], first: Snapshot, interval: float) -> Snapshot:
    current, shown = first, None
    while True:
        line = (current.done, current.failed, current.total, current.status)
        if line != shown:
            click.echo(
                dumps(
                    {
                        "status": current.status,
                        "done": current.done,
                        "failed": current.failed,
                        "total": current.total,
                        "final": current.final,
                    }
                )
            )
            shown = line
        if current.final:
            return current
        time.sleep(interval)  # the polling interval the user asked for
        current = poll()
