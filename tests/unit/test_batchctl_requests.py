"""batchctl's request files: OpenAI Batch input lines and the platform's own, translated to one batch body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.batchctl.client import CliError
from infra.batchctl.requests_file import translate


def write(tmp_path: Path, lines: list[Any]) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    return path


def chat(custom_id: str, content: Any, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **body},
    }


def test_openai_chat_lines_become_generate_requests_keyed_by_custom_id(tmp_path: Path) -> None:
    system = {"role": "system", "content": "Answer in one line."}
    turns = [
        system,
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "More"}]},
    ]
    lines = [
        chat("a", "Hello", max_tokens=20, temperature=0.3),
        {**chat("b", "unused"), "body": {"model": "gemini-2.5-pro", "messages": turns}},
    ]

    translated = translate(write(tmp_path, lines), options={"wait": False})

    assert translated.kind == "generate"
    assert translated.lines == 2
    assert translated.body == {
        "requests": [
            {"prompt": "Hello", "customId": "a", "temperature": 0.3, "maxTokens": 20},
            {
                "prompt": "User: Hi\n\nAssistant: Hello\n\nUser: More",
                "customId": "b",
                "model": "gemini-2.5-pro",
                "systemInstruction": "Answer in one line.",
            },
        ],
        "options": {"wait": False},
    }
    assert translated.notes == [
        "model gpt-4o-mini is not a Gemini model: the platform's default model is used"
    ]


def test_openai_embeddings_lines_are_indexed_into_one_collection_in_one_operation(tmp_path: Path) -> None:
    lines = [
        {"custom_id": "d1", "method": "POST", "url": "/v1/embeddings", "body": {"input": "brake pads"}},
        {"custom_id": "d2", "method": "POST", "url": "/v1/embeddings", "body": {"input": ["a", "b"]}},
    ]

    translated = translate(write(tmp_path, lines), collection="kb")

    assert translated.kind == "embeddings"
    assert translated.body["operations"] == [
        {
            "type": "index",
            "name": "kb",
            "documents": [
                {"text": "brake pads", "metadata": {"id": "d1"}},
                {"text": "a", "metadata": {"id": "d2-0"}},
                {"text": "b", "metadata": {"id": "d2-1"}},
            ],
        }
    ]
    with pytest.raises(CliError, match="--collection"):
        translate(write(tmp_path, lines))


def test_the_platforms_own_lines_pass_as_they_are(tmp_path: Path) -> None:
    own = [{"prompt": "Hi", "customId": "x", "model": "gemini-2.5-flash"}, {"prompt": "Bye"}]
    assert translate(write(tmp_path, own)).body["requests"] == own

    operations = [{"type": "search", "name": "kb", "query": "brakes", "topK": 3}]
    translated = translate(write(tmp_path, operations))
    assert translated.kind == "embeddings"
    assert translated.body["operations"] == operations


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([chat("a", "x"), {"type": "search", "name": "kb", "query": "q"}], "line 2: a embeddings request"),
        ([chat("a", "x"), chat("a", "y")], "line 2: custom_id a is repeated"),
        ([{"text": "no kind"}], "line 1: neither an OpenAI Batch request"),
        ([{**chat("a", "x"), "url": "/v1/responses"}], "line 1: url /v1/responses is not supported"),
        ([chat("a", [{"type": "image_url", "image_url": {}}])], "line 1: only text message parts"),
        ([{**chat("a", "x"), "method": "GET"}], "line 1: method must be POST"),
        ([], "holds no request"),
    ],
)
def test_bad_files_name_the_line_and_are_usage_errors(tmp_path: Path, lines: list[Any], problem: str) -> None:
    with pytest.raises(CliError, match=problem) as raised:
        translate(write(tmp_path, lines))
    assert raised.value.exit_code == 2


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(CliError, match="line 2: not JSON"):
        translate(path)
