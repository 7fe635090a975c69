"""The one table of kinds. A new kind is a module in shared/kinds and one line here; `POST /batch/{name}`
accepts its requests and the engine runs it. The engine never imports a kind by name: the composition root
hands it this table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.kinds.analyze import Analyze
from shared.kinds.base import Kind
from shared.kinds.batchmode import BatchmodeKind
from shared.kinds.embeddings import Embeddings
from shared.kinds.generate import Generate
from shared.kinds.images import Images
from shared.kinds.metrics import Metrics
from shared.kinds.report import Report

KINDS: Mapping[str, Kind[Any, Any]] = {
    kind.name: kind
    for kind in (Generate(), Embeddings(), Analyze(), Images(), Metrics(), Report(), BatchmodeKind())
}
