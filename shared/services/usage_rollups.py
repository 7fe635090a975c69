"""Rollups of usage: per scope (each tenant, and all tenants), the statistics of every closed minute, hour and
day, merged from the usage records' own statistics (never from their events).

One scheduled writer (Cloud Scheduler, every minute) rolls the minutes closed `lag` ago (late commits land
inside the lag), then every hour and day those minutes close, and moves a watermark. Rollups have ids derived
from scope, grain and start and are written with `set`: a double firing, or a run that died half way and is
run again, writes the same documents. Reads (shared.services.analytics) merge rollups before the watermark
and raw records after it.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from shared.models.usage_stats import UsageStats
from shared.ports import ALL_TENANTS, Rollup, UsageStore

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
GRAINS = {"minute": MINUTE, "hour": HOUR, "day": DAY}
# A run rolls at most this much, so a run after a long pause (or the first run over old data) stays bounded;
# the next runs catch up.
MAX_SPAN = dt.timedelta(days=2)
EXPIRED_PER_RUN = 2000


def floor(at: dt.datetime, step: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return at - (at - epoch) % step


async def roll(
    *, usage: UsageStore, now: dt.datetime, lag: dt.timedelta, retention: dt.timedelta
) -> dict[str, int | str]:
    """The scheduled run: roll what closed since the watermark, then delete what is past retention."""
    closed_until = floor(now - lag, MINUTE)
    stored = watermark = await usage.get_watermark()
    if watermark is None:
        earliest = await usage.earliest_usage_at()
        watermark = floor(earliest, MINUTE) if earliest is not None else closed_until
    watermark = max(watermark, floor(now - retention, DAY))
    end = max(watermark, min(closed_until, watermark + MAX_SPAN))
    written = 0
    if end > watermark:
        written = await roll_range(usage=usage, start=watermark, end=end, retention=retention)
    if end != stored:
        await usage.set_watermark(end)
    expired = await usage.delete_expired(now=now, limit=EXPIRED_PER_RUN)
    return {
        "rolledFrom": watermark.isoformat(),
        "rolledTo": end.isoformat(),
        "rollups": written,
        "expired": expired,
    }


async def roll_range(
    *, usage: UsageStore, start: dt.datetime, end: dt.datetime, retention: dt.timedelta
) -> int:
    """Write the rollups of the minutes in [start, end) (minute-aligned), and of the hours and days that end
    in (start, end]: the minutes before `start` are read from their rollups. Returns the rollups written."""
    minutes: dict[tuple[str, dt.datetime], UsageStats] = defaultdict(UsageStats)
    for summary in await usage.usage_summaries(tenant=None, start=start, end=end):
        minute = floor(summary.at, MINUTE)
        minutes[(summary.tenant, minute)].merge(summary.stats)
        minutes[(ALL_TENANTS, minute)].merge(summary.stats)
    rollups = _rollups("minute", minutes, retention)
    hours = await _close(usage=usage, parts=minutes, grain="hour", part="minute", start=start, end=end)
    rollups += _rollups("hour", hours, retention)
    days = await _close(usage=usage, parts=hours, grain="day", part="hour", start=start, end=end)
    rollups += _rollups("day", days, retention)
    await usage.put_rollups(rollups)
    return len(rollups)


async def _close(
    *,
    usage: UsageStore,
    parts: dict[tuple[str, dt.datetime], UsageStats],
    grain: str,
    part: str,
    start: dt.datetime,
    end: dt.datetime,
) -> dict[tuple[str, dt.datetime], UsageStats]:
    """The `grain` periods that close in (start, end], merged from their `part` periods: those rolled in this
    run (`parts`) and those rolled before `start` (read back)."""
    step, part_step = GRAINS[grain], GRAINS[part]
    first, last = floor(start, step) + step, floor(end, step)  # the first and last period end in (start, end]
    closed: dict[tuple[str, dt.datetime], UsageStats] = defaultdict(UsageStats)
    if first > last:
        return closed
    for (scope, at), stats in parts.items():
        if first - step <= at < last:
            closed[(scope, floor(at, step))].merge(stats)
    # Parts before `start` of the first period that closes: rolled by earlier runs.
    rolled_before = floor(start, part_step)
    period = first - step
    if period < rolled_before:
        for rollup in await usage.rollups(scope=None, grain=part, start=period, end=rolled_before):
            closed[(rollup.scope, period)].merge(rollup.stats)
    return closed


def _rollups(
    grain: str, cells: dict[tuple[str, dt.datetime], UsageStats], retention: dt.timedelta
) -> list[Rollup]:
    step = GRAINS[grain]
    return [
        Rollup(scope=scope, grain=grain, start=at, stats=stats, expire_at=at + step + retention)
        for (scope, at), stats in cells.items()
        if stats.cells
    ]


def pieces(
    start: dt.datetime, end: dt.datetime, *, largest: str = "day"
) -> Iterable[tuple[str, dt.datetime]]:
    """[start, end) (minute-aligned) as the fewest aligned rollup periods, no larger than `largest`."""
    allowed = [grain for grain in ("day", "hour") if GRAINS[grain] <= GRAINS[largest]]
    at = start
    while at < end:
        for grain in (*allowed, "minute"):
            step = GRAINS[grain]
            if floor(at, step) == at and at + step <= end:
                yield grain, at
                at += step
                break
