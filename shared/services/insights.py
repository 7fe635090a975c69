"""Insights: rules over a window's statistics (the README states each rule). Every recommendation names the
figure that triggered it, with its value and threshold."""

from __future__ import annotations

from typing import Any

from shared.models.auth import Principal
from shared.models.usage_stats import Cell, UsageStats, percentile
from shared.ports import UsageStore
from shared.services.analytics import Window, hourly, scope_of, window_stats
from shared.services.pricing import batch_mode_savings_usd, cache_savings_usd, input_price_per_million

P95_DEGRADED_MS = 5_000
P95_CRITICAL_MS = 15_000
SUCCESS_DEGRADED = 95.0
SUCCESS_CRITICAL = 80.0
CACHE_HIT_LOW = 20.0
CACHE_MIN_CALLS = 20
TREND_BAND = 0.10  # calls within +-10 % of the previous window: stable
PEAK_FACTOR = 1.5  # an hour of day with at least 1.5x the mean calls per hour of day is a peak
PEAK_RANGES = 3
PREMIUM_INPUT_PRICE = 1.0  # USD per million input tokens: a premium model (gemini-2.5-pro)
PREMIUM_COST_SHARE = 50.0
INTERACTIVE_COST_MIN_USD = 0.01

ERROR_NAMES = {
    "error:429": "Rate limit exceeded",
    "error:408": "Request timeout",
    "error:504": "Deadline exceeded",
    "error:500": "Internal server error",
    "error:502": "Bad gateway",
    "error:503": "Service unavailable",
    "error:400": "Invalid request",
    "error:404": "Model not found",
    "error:unknown": "Unknown error (timeout or connection)",
}
ERROR_SUGGESTIONS = {
    "error:429": [
        "Implementar backoff exponencial (el motor ya lo aplica respetando retryDelay)",
        "Reducir options.concurrency o pedir más cuota (RPM/TPM) del proyecto",
    ],
    "error:400": ["Validar las peticiones antes de enviarlas: los 400 no se reintentan"],
    "error:404": ["Revisar el nombre del modelo: los 404 no se reintentan"],
}
TRANSIENT_SUGGESTIONS = [
    "Los errores transitorios se reintentan con backoff: subir retryPolicy.maxRetries si no se absorben",
]


def _pct(part: float, whole: float) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


def _share(value: float) -> str:
    return f"{round(value, 1):g}%"


def performance(total: Cell) -> dict[str, Any]:
    if not total.calls:
        return {"status": "no_data", "message": "Sin llamadas en la ventana", "recommendations": []}
    success = _pct(total.ok, total.calls)
    p95 = percentile(total.latency, 0.95) or 0.0
    hit_rate = _pct(total.cache_hits, total.calls)
    recommendations = []
    if success < SUCCESS_DEGRADED:
        recommendations.append(f"Revisar los errores: successRate {success}% < {SUCCESS_DEGRADED}%")
    if p95 > P95_DEGRADED_MS:
        recommendations.append(
            "Usar un modelo más rápido o reducir maxTokens: "
            f"p95ResponseTime {round(p95)} ms > {P95_DEGRADED_MS} ms"
        )
    if total.calls >= CACHE_MIN_CALLS and hit_rate < CACHE_HIT_LOW:
        recommendations.append(
            "Considerar aumentar el cache para mejorar la tasa de aciertos (instrucciones de sistema comunes "
            f"al principio del prompt): hitRate {hit_rate}% < {CACHE_HIT_LOW}%"
        )
    if success < SUCCESS_CRITICAL or p95 > P95_CRITICAL_MS:
        status, message = "critical", "Rendimiento crítico: muchos errores o latencias muy altas"
    elif success < SUCCESS_DEGRADED or p95 > P95_DEGRADED_MS:
        status, message = "degraded", "Rendimiento degradado: revisar errores y latencias"
    else:
        status, message = "good", "Rendimiento dentro de parámetros normales"
    return {
        "status": status,
        "message": f"{message} (successRate {success}%, p95ResponseTime {round(p95)} ms)",
        "recommendations": recommendations,
    }


def trend(current: int, previous: int) -> str:
    if previous == 0:
        return "increasing" if current > 0 else "stable"
    change = (current - previous) / previous
    if change > TREND_BAND:
        return "increasing"
    if change < -TREND_BAND:
        return "decreasing"
    return "stable"


def peak_hours(calls_by_hour: dict[int, int]) -> list[str]:
    """Hours of day (UTC) with at least PEAK_FACTOR times the mean calls per hour of day, adjacent ones
    joined into ranges, the PEAK_RANGES busiest ranges in time order."""
    mean = sum(calls_by_hour.values()) / 24
    if mean == 0:
        return []
    peaks = [hour for hour in range(24) if calls_by_hour.get(hour, 0) >= PEAK_FACTOR * mean]
    ranges: list[list[int]] = []
    for hour in peaks:
        if ranges and ranges[-1][-1] == hour - 1:
            ranges[-1].append(hour)
        else:
            ranges.append([hour])
    busiest = sorted(ranges, key=lambda r: -sum(calls_by_hour.get(h, 0) for h in r))[:PEAK_RANGES]
    return [f"{r[0]:02d}:00-{(r[-1] + 1) % 24:02d}:00" for r in sorted(busiest)]


def cost_view(stats: UsageStats) -> tuple[list[str], dict[str, float]]:
    total_cost = sum(cell.cost_usd for _, cell in stats)
    cache_saved = sum(cache_savings_usd(model=m, cached_tokens=cell.cached_tokens) for (m, _), cell in stats)
    batch_cost = sum(cell.batch_mode_cost_usd for _, cell in stats)
    batch_saved = batch_mode_savings_usd(batch_mode_cost_usd=batch_cost)
    advice = []
    premium = sum(
        cell.cost_usd for (m, _), cell in stats if input_price_per_million(m) >= PREMIUM_INPUT_PRICE
    )
    if total_cost and _pct(premium, total_cost) > PREMIUM_COST_SHARE:
        advice.append(
            "Usar modelos más eficientes para consultas simples (gemini-2.5-flash o flash-lite): "
            f"modelos premium = {_pct(premium, total_cost)}% del coste > {PREMIUM_COST_SHARE}%"
        )
    interactive = total_cost - batch_cost
    if interactive >= INTERACTIVE_COST_MIN_USD:
        advice.append(
            "Mover el trabajo no urgente a Batch Mode (50% del precio): "
            f"coste interactivo {round(interactive, 4)} USD, ahorro posible {round(interactive / 2, 4)} USD"
        )
    savings = {
        "cacheUsd": round(cache_saved, 6),
        "batchModeUsd": round(batch_saved, 6),
        "totalUsd": round(cache_saved + batch_saved, 6),
    }
    return advice, savings


def errors_view(total: Cell) -> dict[str, Any]:
    retries = {
        "failedCalls": total.failed,
        "absorbedByRetries": total.absorbed,
        "absorbedShare": _pct(total.absorbed, total.failed),
    }
    if not total.failed:
        return {"mostCommon": None, "frequency": "0%", "suggestions": [], "retries": retries}
    code, count = max(total.errors.items(), key=lambda item: (item[1], item[0]))
    share = _pct(count, total.failed)
    suggestions = [
        f"{text} ({ERROR_NAMES.get(code, code)} = {share}% de los errores)"
        for text in ERROR_SUGGESTIONS.get(code, TRANSIENT_SUGGESTIONS)
    ]
    if total.absorbed < total.failed:
        suggestions.append(
            f"Solo {_share(_pct(total.absorbed, total.failed))} de los fallos los absorbieron los reintentos"
        )
    return {
        "mostCommon": ERROR_NAMES.get(code, code),
        "frequency": _share(_pct(total.failed, total.calls)),
        "suggestions": suggestions,
        "retries": retries,
    }


async def insights(*, usage: UsageStore, principal: Principal, window: Window) -> dict[str, Any]:
    """The seed's `insights`, over `window`, compared with the window of the same length before it."""
    scope = scope_of(principal, None)
    previous = Window(start=window.start - (window.end - window.start), end=window.start)
    parts = await window_stats(usage=usage, tenant=scope, window=window, largest="hour")
    before = await window_stats(usage=usage, tenant=scope, window=previous)
    stats = UsageStats.merged(s for _, s in parts)
    total = stats.total()
    previous_calls = UsageStats.merged(s for _, s in before).total().calls
    advice, savings = cost_view(stats)
    return {
        "insights": {
            "performance": performance(total),
            "usage": {
                "trend": trend(total.calls, previous_calls),
                "peakHours": peak_hours(hourly(parts)),
                "costOptimization": advice,
                "calls": total.calls,
                "previousCalls": previous_calls,
                "savings": savings,
            },
            "errors": errors_view(total),
        },
        "window": window.view(),
    }
