"""A JSONL file of requests -> the body of `POST /batch/generate` or `POST /batch/embeddings`.

Two formats, line by line (mixing them is fine, mixing kinds is not):
- OpenAI Batch input: `{"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/embeddings",
  "body": {"model", "messages" | "input", "temperature", "max_tokens"}}`;
- the platform's own: a generate request (`{"prompt", "customId", ...}`) or an embeddings operation
  (`{"type": "index" | "search", "name", ...}`), sent as they are (the server validates them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.batchctl.client import CliError

CHAT_URLS = ("/v1/chat/completions", "/chat/completions")
EMBEDDING_URLS = ("/v1/embeddings", "/embeddings")
SYSTEM_ROLES = ("system", "developer")


@dataclass(kw_only=True)
class Translated:
    """What one file becomes: the kind's endpoint, its body and notes for the user."""

    kind: str
    body: dict[str, Any]
    lines: int
    notes: list[str] = field(default_factory=list)


def _fail(number: int, problem: str) -> CliError:
    return CliError(f"line {number}: {problem}", exit_code=2, code="invalid_file")


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Each non-blank line of a JSONL file, parsed, with its line number; a bad line names its number."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", exit_code=2, code="invalid_file") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise _fail(number, f"not JSON ({exc.msg})") from exc
            yield number, value


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, value in json_lines(path):
        if not isinstance(value, dict):
            raise _fail(number, "a request is a JSON object")
        yield number, value


def _text_of(content: Any, number: int) -> str:
    """A chat message's content: a string, or text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _fail(number, "only text message parts can be translated")
            texts.append(str(part.get("text", "")))
        return "\n".join(texts)
    raise _fail(number, "a message's content is a string or a list of text parts")


def _model(body: dict[str, Any], notes: list[str]) -> str | None:
    """OpenAI model names have no Gemini counterpart: they fall back to the platform's default."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return None
    if model.removeprefix("models/").startswith("gemini"):
        return model
    note = f"model {model} is not a Gemini model: the platform's default model is used"
    if note not in notes:
        notes.append(note)
    return None


def chat_request(line: dict[str, Any], number: int, notes: list[str]) -> dict[str, Any]:
    """One `/v1/chat/completions` line -> one generate request keyed by its custom_id."""
    body = line["body"]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail(number, "body.messages must be a non-empty list")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise _fail(number, "each message is an object with role and content")
        role = str(message.get("role", "user"))
        text = _text_of(message.get("content"), number)
        if role in SYSTEM_ROLES:
            system.append(text)
        else:
            turns.append((role, text))
    if not turns:
        raise _fail(number, "body.messages has no user message")
    prompt = turns[0][1] if len(turns) == 1 else "\n\n".join(f"{r.capitalize()}: {t}" for r, t in turns)
    request: dict[str, Any] = {"prompt": prompt, "customId": str(line["custom_id"])}
    if model := _model(body, notes):
        request["model"] = model
    if system:
        request["systemInstruction"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        request["temperature"] = body["temperature"]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        request["maxTokens"] = max_tokens
    return request


def embedding_documents(line: dict[str, Any], number: int) -> list[dict[str, Any]]:
    """One `/v1/embeddings` line -> documents whose ids are its custom_id (`custom_id-i` for a list)."""
    custom_id = str(line["custom_id"])
    given = line["body"].get("input")
    if isinstance(given, str):
        return [{"text": given, "metadata": {"id": custom_id}}]
    if isinstance(given, list) and given and all(isinstance(t, str) for t in given):
        return [{"text": t, "metadata": {"id": f"{custom_id}-{i}"}} for i, t in enumerate(given)]
    raise _fail(number, "body.input must be a string or a list of strings (token arrays are not supported)")


def _openai_kind(line: dict[str, Any], number: int) -> str:
    if not isinstance(line.get("body"), dict):
        raise _fail(number, "body must be an object")
    if str(line.get("method", "POST")).upper() != "POST":
        raise _fail(number, "method must be POST")
    url = str(line.get("url", "/v1/chat/completions"))
    if url.endswith(CHAT_URLS):
        return "generate"
    if url.endswith(EMBEDDING_URLS):
        return "embeddings"
    raise _fail(number, f"url {url} is not supported (use /v1/chat/completions or /v1/embeddings)")


def translate(
    path: Path, *, collection: str | None = None, options: dict[str, Any] | None = None
) -> Translated:
    """Read `path` and build the request body; usage errors (exit 2) name the line at fault."""
    notes: list[str] = []
    kind: str | None = None
    generate: list[dict[str, Any]] = []
    operations: list[dict[str, Any]] = []
    documents: list[dict[str, Any]] = []
    seen: set[str] = set()
    count = 0
    for number, line in _lines(path):
        count += 1
        if "custom_id" in line:
            line_kind = _openai_kind(line, number)
            custom_id = str(line["custom_id"])
            if custom_id in seen:
                raise _fail(number, f"custom_id {custom_id} is repeated (results are keyed by it)")
            seen.add(custom_id)
        elif "prompt" in line:
            line_kind = "generate"
        elif line.get("type") in ("index", "search"):
            line_kind = "embeddings"
        else:
            raise _fail(
                number,
                "neither an OpenAI Batch request (custom_id, body) nor a platform request "
                "(prompt, or an embeddings operation with type index or search)",
            )
        if kind is not None and line_kind != kind:
            raise _fail(number, f"a {line_kind} request in a file of {kind} requests: one kind per file")
        kind = line_kind
        if "custom_id" in line and kind == "generate":
            generate.append(chat_request(line, number, notes))
        elif "custom_id" in line:
            _model(line["body"], notes)
            documents.extend(embedding_documents(line, number))
        elif kind == "generate":
            generate.append(line)
        else:
            operations.append(line)
    if kind is None:
        raise CliError(f"{path} holds no request", exit_code=2, code="invalid_file")
    body_options = dict(options or {})
    if kind == "generate":
        return Translated(
            kind=kind, body={"requests": generate, "options": body_options}, lines=count, notes=notes
        )
    if documents:
        if not collection:
            raise CliError(
                "OpenAI embeddings lines are indexed into a collection: pass --collection NAME",
                exit_code=2,
                code="invalid_file",
            )
        operations.insert(0, {"type": "index", "name": collection, "documents": documents})
        notes.append(
            f"{len(documents)} inputs indexed into collection {collection} (document id = custom_id)"
        )
    return Translated(
        kind=kind, body={"operations": operations, "options": body_options}, lines=count, notes=notes
    )
