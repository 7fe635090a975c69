"""What one generation batch leaves in Firestore, and the gateway's peak memory around one run (bench only).

Firestore bills and limits by documents written and their stored size. A batch's documents are its batch
document, its chunks, its result pages, the usage records of its model calls and its audit record; each chunk
document is also updated once per results commit (one per page) and once when claimed. The stored size is
Firestore's documented storage size of each document (name, field names and values, 32 bytes overhead).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter


def _value_size(value: Any) -> int:
    """Firestore's storage size of a field value."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float | dt.datetime):
        return 8
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(len(k.encode()) + 1 + _value_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_value_size(v) for v in value)
    return 16  # references, geo points, vectors' headers: not in a generation batch


def document_size(path: str, data: dict[str, Any]) -> int:
    """Firestore's storage size of a document: its name, its fields, 32 bytes."""
    name = sum(len(segment.encode()) + 1 for segment in path.split("/")) + 16
    return name + _value_size(data) + 32


def batch_footprint(db: firestore.Client, *, batch_id: str) -> dict[str, int]:
    """Documents, writes and stored bytes of one batch (see the module docstring)."""
    batch_ref = db.collection("batches").document(batch_id)
    documents = [batch_ref.get()]
    chunks = list(batch_ref.collection("chunks").stream())
    pages = list(batch_ref.collection("pages").stream())
    usage = list(db.collection("usage_events").where(filter=FieldFilter("job_id", "==", batch_id)).stream())
    audit = list(db.collection("audit_log").where(filter=FieldFilter("target", "==", batch_id)).stream())
    documents += chunks + pages + usage + audit
    claims = sum(int((chunk.to_dict() or {}).get("claims", 0)) for chunk in chunks)
    stored = sum(document_size(d.reference.path, d.to_dict() or {}) for d in documents if d.exists)
    return {
        "documents": len(documents),
        # every document created once, a chunk updated at each claim and with each page; the batch document
        # marked running and finalized
        "writes": len(documents) + claims + len(pages) + 2,
        "bytes": stored,
    }


def reset_peak_rss(pids: list[int]) -> None:
    """Reset the peak resident set (VmHWM) of each process, so the next reading is this run's own peak."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            continue  # another user's process, or gone
