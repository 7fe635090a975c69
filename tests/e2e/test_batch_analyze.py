"""Batch analysis through the gateway: every analysis type end to end against the Gemini emulator, and model
output that breaks its schema never returned as a success."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.batch_client import status
from tests.e2e.delivery import usage_events

POSITIVE = "This is a great product, I love it and the delivery was excellent"
NEGATIVE = "Terrible part, it arrived broken and the support was awful"
SPANISH = "Este es un texto muy positivo y alegre"


def analyze(api: httpx.Client, texts: list[Any], analysis_type: str, **options: Any) -> httpx.Response:
    return api.post(
        "/batch/analyze", json={"texts": texts, "analysisType": analysis_type, "options": options}
    )


def finished(api: httpx.Client, texts: list[Any], analysis_type: str, **options: Any) -> dict[str, Any]:
    response = analyze(api, texts, analysis_type, **options)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["kind"] == "analyze" and body["status"] == "completed", body
    return body


def test_sentiment_with_confidence_and_details(api: httpx.Client, firestore_db: Any) -> None:
    body = finished(
        api,
        [POSITIVE, NEGATIVE, {"text": SPANISH, "customId": "es-1"}],
        "sentiment",
        includeConfidence=True,
        detailedAnalysis=True,
    )

    positive, negative, spanish = body["results"]
    assert [r["customId"] for r in body["results"]] == [None, None, "es-1"]
    assert all(r["success"] and r["analysisType"] == "sentiment" for r in body["results"])
    assert positive["analysis"]["label"] == "positive" and positive["analysis"]["score"] > 0
    assert negative["analysis"]["label"] == "negative" and negative["analysis"]["score"] < 0
    assert spanish["analysis"]["label"] == "positive"
    for result in body["results"]:
        analysis = result["analysis"]
        assert 0 <= analysis["confidence"] <= 1
        assert {"aspects", "emotions", "explanation"} <= set(analysis)
        assert isinstance(result["tokensUsed"], int) and result["tokensUsed"] > 0
    assert body["summary"]["byLabel"] == {"positive": 2, "negative": 1}
    events = usage_events(firestore_db, body["batchId"])
    assert len(events) == 3 and {e["endpoint"] for e in events} == {"analyze"}


def test_without_options_only_the_basic_fields_come_back(api: httpx.Client) -> None:
    body = finished(api, [POSITIVE], "sentiment")

    assert set(body["results"][0]["analysis"]) == {"label", "score"}


@pytest.mark.parametrize(
    "analysis_type,options,check",
    [
        ("summary", {"detailedAnalysis": True}, lambda a: a["summary"] and isinstance(a["keyPoints"], list)),
        ("keywords", {}, lambda a: a["keywords"][0]["term"] and 0 < a["keywords"][0]["relevance"] <= 1),
        ("entities", {}, lambda a: isinstance(a["entities"], list)),
        ("language", {}, lambda a: a["language"] == "en"),
    ],
)
def test_each_analysis_type(
    api: httpx.Client, analysis_type: str, options: dict[str, Any], check: Any
) -> None:
    text = "The brake pads from Bosch arrived in Madrid. The brake pads fit well. Great brake pads."

    result = finished(api, [text], analysis_type, **options)["results"][0]

    assert result["success"], result
    assert check(result["analysis"]), result["analysis"]


def test_language_of_a_spanish_text(api: httpx.Client) -> None:
    result = finished(api, [SPANISH], "language")["results"][0]

    assert result["analysis"]["language"] == "es"


def test_classification_picks_an_offered_category(api: httpx.Client) -> None:
    categories = ["engine", "brakes", "lights"]

    body = finished(
        api, ["My brakes squeal when I stop", "The engine overheats"], "classification", categories=categories
    )

    assert [r["analysis"]["category"] for r in body["results"]] == ["brakes", "engine"]
    assert body["summary"]["byCategory"] == {"brakes": 1, "engine": 1}


@pytest.mark.parametrize("marker", ["EMULATOR_INVALID_JSON", "EMULATOR_BREAK_SCHEMA"])
def test_invalid_model_output_is_retried_once_then_fails_the_item(
    api: httpx.Client, firestore_db: Any, marker: str
) -> None:
    body = analyze(api, [f"{marker} a fine text", POSITIVE], "sentiment").json()

    broken, fine = body["results"]
    assert (broken["success"], broken["status"], broken["error"]["code"]) == (
        False,
        "failed",
        "invalid_model_output",
    )
    assert "analysis" not in broken or broken["analysis"] is None
    assert fine["success"] and fine["analysis"]["label"] == "positive"
    calls = [e for e in usage_events(firestore_db, body["batchId"]) if e["event_id"].split("-")[1] == "0"]
    assert len(calls) == 2, "the invalid answer was asked for once more"
    assert status(api, body["batchId"])["progress"]["failed"] == 1


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"texts": ["x"], "analysisType": "poetry"}, "analysisType"),
        ({"texts": [], "analysisType": "sentiment"}, "texts"),
        ({"texts": ["x"], "analysisType": "classification"}, "options.categories"),
        ({"texts": [""], "analysisType": "sentiment"}, "texts.0"),
        ({"texts": ["x"], "analysisType": "sentiment", "options": {"owner": "me"}}, "options.owner"),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    api: httpx.Client, payload: dict[str, Any], field: str
) -> None:
    response = api.post("/batch/analyze", json=payload)

    assert response.status_code == 400, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert any(f.startswith(field) for f in fields), fields
    assert api.get("/batch/active").json()["batches"] == []


def test_stats_and_active_serve_every_kind(api: httpx.Client) -> None:
    finished(api, [POSITIVE], "language")
    generated = api.post("/batch/generate", json={"requests": [{"prompt": "hi"}]})
    assert generated.status_code == 200 and generated.json()["kind"] == "generate"

    stats = api.get("/batch/stats").json()

    assert stats["byKind"]["analyze"]["finishedBatches"] == 1
    assert stats["byKind"]["generate"]["finishedBatches"] == 1
    assert stats["byKind"]["embeddings"]["finishedBatches"] == 0
    assert stats["finishedBatches"] == 2 and stats["items"] == 2
    batch_id = generated.json()["batchId"]
    assert status(api, batch_id)["kind"] == "generate"
