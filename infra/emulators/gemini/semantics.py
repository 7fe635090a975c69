"""Which value a property of a JSON answer takes from the text's facts, chosen by the property's name.

Names are compared without case, `_` or `-` (`key_points` is `keyPoints`), wherever the property sits in
the object tree. A value is only proposed here; the schema filler keeps it only if it fits the schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from infra.emulators.gemini.analysis import (
    TextFacts,
    category,
    category_counts,
    confidence,
    explanation,
    sentiment_label,
    sentiment_score,
    summary,
)

MISSING: Final[Any] = object()  # no semantic value: the filler falls back to its deterministic random one

SENTIMENT = frozenset({"label", "sentiment", "polarity", "overallsentiment", "sentimentlabel"})
CATEGORY = frozenset({"category", "topic", "class", "classification", "intent", "label"})
CATEGORIES = frozenset({"categories", "topics", "labels", "classes"})
SCORE = frozenset({"score", "sentimentscore", "polarityscore"})
CONFIDENCE = frozenset({"confidence", "certainty"})
LANGUAGE = frozenset({"language", "languagecode", "lang", "detectedlanguage"})
SUMMARY = frozenset({"summary", "shortsummary", "tldr"})
EXPLANATION = frozenset({"explanation", "rationale", "reasoning", "reason", "justification"})
KEY_POINTS = frozenset({"keypoints", "highlights", "mainpoints", "bulletpoints"})
KEYWORDS = frozenset({"keywords", "keyphrases", "keyterms"})
ENTITIES = frozenset({"entities", "namedentities"})
EMOTIONS = frozenset({"emotions"})
EMOTION = frozenset({"emotion", "dominantemotion", "primaryemotion"})
ASPECTS = frozenset({"aspects", "aspectsentiments"})
LANGUAGE_NAMES = {
    "en": ("english", "ingles"),
    "es": ("spanish", "espanol", "español", "castellano"),
    "fr": ("french", "frances", "francés", "francais", "français"),
    "de": ("german", "aleman", "alemán", "deutsch"),
    "pt": ("portuguese", "portugues", "portugués", "português"),
}
# The properties of an item of such a list: its text, its kind, its weight (relevance, salience, intensity).
TERM = ("term", "keyword", "word", "phrase", "text", "name", "value", "entity", "mention")
TYPE = ("type", "entitytype", "kind", "category", "label")
WEIGHT = ("relevance", "salience", "intensity", "score", "weight", "importance", "strength", "probability")
COUNT = ("count", "frequency", "occurrences", "mentions")
KEY_POINTS_MAX = 3
KEYWORDS_MAX = 5
ASPECTS_MAX = 5
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


@dataclass(frozen=True)
class Given:
    """One item of a semantic list: its main text, values by property name for an object item, and the
    facts its other properties are read from (an aspect's own opinion words; None: the whole text's)."""

    text: str
    values: Mapping[str, Any] = field(default_factory=dict)
    facts: TextFacts | None = None


def normalise(name: str) -> str:
    return _NOT_ALNUM.sub("", name.lower())


def kind_of(schema: Mapping[str, Any]) -> str:
    """The JSON type a (resolved) schema asks for, lowercased as JSON Schema spells it."""
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if str(t).lower() != "null"), "string")
    if declared:
        return str(declared).lower()
    if "properties" in schema or "additionalProperties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    for example in (schema.get("enum") or [None])[:1] + [schema.get("const")]:
        if isinstance(example, bool):
            return "boolean"
        if isinstance(example, int | float):
            return "integer" if isinstance(example, int) else "number"
    return "string"


def semantic_value(name: str, schema: Mapping[str, Any], facts: TextFacts, items: Mapping[str, Any]) -> Any:
    """The value the text gives property `name` (normalised) of `schema` (resolved; `items` its resolved
    item schema for an array), or MISSING. Lists may hold `Given` items."""
    kind = kind_of(schema)
    if schema.get("enum"):
        return _enum_value(name, list(schema["enum"]), facts)
    if kind == "string":
        return _string_value(name, facts)
    if kind in ("number", "integer"):
        if name in SCORE:
            return sentiment_score(facts)
        if name in CONFIDENCE:
            return confidence(facts)
    if kind == "array":
        return _list_value(name, facts, items)
    return MISSING


def _enum_value(name: str, enum: list[Any], facts: TextFacts) -> Any:
    if name in SENTIMENT and {"pos", "neg"} <= {str(value).lower()[:3] for value in enum}:
        return sentiment_label(facts, enum)
    if name in CATEGORY:
        return category(facts, enum)
    if name in LANGUAGE:
        return language_in(facts.language, enum)
    if name in EMOTION and facts.emotions:
        return facts.emotions[0][0]
    return MISSING


def language_in(code: str, enum: Sequence[Any]) -> Any:
    """The enum value naming language `code`: the code itself, a regional form (es-ES), or its name."""
    names = {code, *LANGUAGE_NAMES.get(code, ())}
    for value in enum:
        text = str(value).lower()
        if text in names or text.split("-")[0].split("_")[0] == code:
            return value
    return MISSING


def _string_value(name: str, facts: TextFacts) -> Any:
    if name in LANGUAGE:
        return facts.language
    if name in SUMMARY:
        return summary(facts)
    if name in EXPLANATION:
        return explanation(facts)
    if name in EMOTION:
        return facts.emotions[0][0] if facts.emotions else "neutral"
    return MISSING


def _named(names: Sequence[str], value: Any) -> dict[str, Any]:
    return dict.fromkeys(names, value)


def _share(count: int, whole: int) -> float:
    """count / whole in (0, 1], rounded to 3 decimals."""
    return max(0.001, round(count / whole, 3))


def _list_value(name: str, facts: TextFacts, items: Mapping[str, Any]) -> Any:
    if name in KEY_POINTS:
        return list(facts.sentences[:KEY_POINTS_MAX])
    if name in KEYWORDS:
        top = facts.keywords[0][1] if facts.keywords else 1
        return [
            Given(word, {**_named(TERM, word), **_named(WEIGHT, _share(count, top)), **_named(COUNT, count)})
            for word, count in facts.keywords[:KEYWORDS_MAX]
        ]
    if name in ENTITIES:
        mentions = sum(entity.count for entity in facts.entities) or 1
        return [
            Given(
                entity.text,
                {
                    **_named(TERM, entity.text),
                    **_named(TYPE, entity.type),
                    **_named(WEIGHT, _share(entity.count, mentions)),
                    **_named(COUNT, entity.count),
                },
            )
            for entity in facts.entities
        ]
    if name in EMOTIONS:
        total = sum(count for _, count in facts.emotions) or 1
        return [
            Given(
                emotion,
                {**_named(("emotion", *TYPE, *TERM), emotion), **_named(WEIGHT, _share(count, total))},
            )
            for emotion, count in facts.emotions
        ]
    if name in ASPECTS:
        return [
            Given(
                aspect.noun,
                _named(("aspect", "target", "feature", "topic", "subject", *TERM), aspect.noun),
                facts.with_opinions(positive=aspect.positive, negative=aspect.negative),
            )
            for aspect in facts.aspects[:ASPECTS_MAX]
        ]
    if name in CATEGORIES and items.get("enum"):
        enum = list(items["enum"])
        counts = category_counts(facts, enum)
        mentioned = sorted((i for i in range(len(enum)) if counts[i]), key=lambda i: (-counts[i], i))
        return [enum[i] for i in mentioned] or enum[:1]
    return MISSING
