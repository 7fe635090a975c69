"""What the emulator "understands" of a text: a small lexicon, stopwords and a gazetteer, deterministically.

Only the user's text is read, never the system instruction, so a test can predict every answer from the
text it sends. Words are compared lowercased and without accents ("pésimo" and "pesimo" are the same word).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

POSITIVE = frozenset(
    "good great excellent love loved loves lovely happy positive amazing awesome wonderful fantastic perfect "
    "best nice glad pleased delighted beautiful brilliant superb enjoy enjoyed recommend satisfied "
    "alegre excelente bueno buena buenos buenas feliz felices positivo positiva genial fantastico fantastica "
    "maravilloso maravillosa perfecto perfecta encanta encanto contento contenta estupendo estupenda "
    "increible mejor recomiendo".split()
)
NEGATIVE = frozenset(
    "bad terrible awful hate hated hates broken negative horrible worst poor sad angry disappointed "
    "disappointing useless defective faulty unhappy annoying fail failed failure worried afraid scared rude "
    "slow dirty negativo negativa malo mala malos malas triste tristes pesimo pesima odio roto rota rotos "
    "defectuoso defectuosa decepcionado decepcionada decepcionante fatal peor enfadado enfadada lento lenta "
    "miedo preocupado preocupada inutil sucio sucia".split()
)
# Every positive word is joy; a negative word is sadness or fear when listed here, anger otherwise.
SADNESS = frozenset(
    "sad unhappy disappointed disappointing triste tristes decepcionado decepcionada decepcionante".split()
)
FEAR = frozenset("afraid scared worried miedo preocupado preocupada".split())
LEXICON = POSITIVE | NEGATIVE

STOPWORDS = {
    "en": frozenset(
        "the a an and or but is are was were be been being am of to in on at by for with from as that this "
        "these those it its it's i me my we our you your he him his she her they them their not no so too "
        "very really just also than then there here what which who whom when where why how about into out up "
        "down over more most some any all such only own same other do does did have has had will would can "
        "could should if because while after before again once though although however".split()
    ),
    "es": frozenset(
        "el la los las de del que y es un una unos unas muy este esta estos estas esto por para con en lo al "
        "se no su sus pero mas como mi mis son fue era ha hay yo tu nos les le me te tambien sin sobre todo "
        "todos ya o cuando donde porque entre hasta desde ni eso ese esa".split()
    ),
    "fr": frozenset(
        "le la les de des du et est un une que qui ce cette pour avec dans sur pas ne tres je il elle nous "
        "vous ils au aux mais ou sont ete etre son sa ses leur".split()
    ),
    "de": frozenset(
        "der die das und ist ein eine nicht mit fur auf den dem des zu von sehr ich sie wir ihr auch aber "
        "oder sind war im bei wie dass".split()
    ),
    "pt": frozenset(
        "o os a as de do da dos das e um uma que nao para com em no na muito este esta isso por mas se eu "
        "ele ela nos sao foi mais como seu sua tambem".split()
    ),
}
ALL_STOPWORDS = frozenset().union(*STOPWORDS.values())
# Words that sit between an opinion word and what it is about, and are not what it is about.
NOT_ASPECTS = frozenset(
    "really extremely quite super pretty absolutely totally realmente bastante totalmente completamente "
    "arrived works worked looks looked feels felt seems seemed sounds became got came think thought overall "
    "even still llego funciona funciono parece parecia estaba estuvo resulto creo".split()
)
GAZETTEER = {
    "LOCATION": frozenset(
        "madrid barcelona valencia sevilla seville paris london berlin rome roma lisbon lisboa tokyo york "
        "spain espana france germany italy portugal mexico europe europa america usa california texas "
        "chicago boston".split()
    ),
    "ORGANIZATION": frozenset(
        "google microsoft apple amazon meta facebook toyota ford bmw volkswagen tesla renault seat audi "
        "mercedes honda nissan netflix ibm intel nvidia samsung sony ikea zara telefonica".split()
    ),
    "PERSON": frozenset(
        "john mary maria james robert michael david anna ana juan jose carlos luis pedro laura sarah peter "
        "paul elena lucia pablo sofia emma olivia william thomas george".split()
    ),
}
SUMMARY_MAX_CHARS = 200
_LETTERS = re.compile(r"[^\W\d_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_MARKER = re.compile(r"EMULATOR_\w*")


@dataclass(frozen=True)
class Entity:
    text: str
    type: str
    count: int


@dataclass(frozen=True)
class Aspect:
    noun: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]


@dataclass(frozen=True)
class TextFacts:
    """Everything the emulator derives from one text, computed once."""

    sentences: tuple[str, ...]
    words: tuple[str, ...]  # lowercased, accents kept
    positive: tuple[str, ...]  # lexicon words in order of appearance, repeats kept
    negative: tuple[str, ...]
    language: str
    keywords: tuple[tuple[str, int], ...]  # most frequent first, ties alphabetical
    entities: tuple[Entity, ...]  # most mentioned first, ties by first appearance
    emotions: tuple[tuple[str, int], ...]  # most frequent first, ties alphabetical
    aspects: tuple[Aspect, ...]  # in order of first appearance

    def with_opinions(self, *, positive: tuple[str, ...], negative: tuple[str, ...]) -> TextFacts:
        """The same facts seen through other opinion words (an aspect's own)."""
        return dataclasses.replace(self, positive=positive, negative=negative)


def fold(word: str) -> str:
    """Lowercased, without accents."""
    return "".join(c for c in unicodedata.normalize("NFKD", word.lower()) if not unicodedata.combining(c))


@functools.lru_cache(maxsize=512)
def analyse(text: str) -> TextFacts:
    """The facts of `text`; emulator markers (EMULATOR_...) are not part of it."""
    text = _MARKER.sub(" ", text)
    sentences = tuple(" ".join(s.split()) for s in _SENTENCE_END.split(text) if s.strip())
    words = tuple(w.lower() for w in _LETTERS.findall(text))
    positive = tuple(w for w in words if fold(w) in POSITIVE)
    negative = tuple(w for w in words if fold(w) in NEGATIVE)
    emotions = Counter(_emotion(w) for w in positive + negative)
    return TextFacts(
        sentences=sentences,
        words=words,
        positive=positive,
        negative=negative,
        language=_language(words),
        keywords=_keywords(words),
        entities=_entities(sentences),
        emotions=tuple(sorted(emotions.items(), key=lambda item: (-item[1], item[0]))),
        aspects=_aspects(sentences),
    )


def _emotion(word: str) -> str:
    folded = fold(word)
    if folded in POSITIVE:
        return "joy"
    return "sadness" if folded in SADNESS else "fear" if folded in FEAR else "anger"


def _language(words: Sequence[str]) -> str:
    """The language whose stopwords occur most; ties go to en, es, fr, de, pt in that order."""
    folded = [fold(w) for w in words]
    counts = {code: sum(w in stopwords for w in folded) for code, stopwords in STOPWORDS.items()}
    best = max(counts, key=lambda code: counts[code])  # max keeps the first of equals
    return best if counts[best] else "en"


def _is_content(word: str) -> bool:
    folded = fold(word)
    return (
        len(word) >= 3 and folded not in ALL_STOPWORDS and folded not in LEXICON and folded not in NOT_ASPECTS
    )


def _keywords(words: Sequence[str]) -> tuple[tuple[str, int], ...]:
    counts = Counter(w for w in words if len(w) >= 3 and fold(w) not in ALL_STOPWORDS)
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:10])


def _entities(sentences: Sequence[str]) -> tuple[Entity, ...]:
    """Runs of capitalised words that do not open a sentence, or any gazetteer word."""
    found: list[str] = []
    for sentence in sentences:
        run: list[str] = []
        end = -1
        for number, match in enumerate(_LETTERS.finditer(sentence)):
            word = match.group()
            known = _gazetteer_type(word) is not None
            capitalised = word[0].isupper() and len(word) > 1 and fold(word) not in ALL_STOPWORDS
            if capitalised and (number > 0 or known) and fold(word) not in LEXICON:
                if run and sentence[end : match.start()].strip():
                    found.append(" ".join(run))
                    run = []
                run.append(word)
                end = match.end()
            elif run:
                found.append(" ".join(run))
                run = []
        if run:
            found.append(" ".join(run))
    counts = Counter(found)
    order = {text: index for index, text in reversed(list(enumerate(found)))}
    ranked = sorted(counts, key=lambda text: (-counts[text], order[text]))
    return tuple(Entity(text, _entity_type(text), counts[text]) for text in ranked[:10])


def _gazetteer_type(word: str) -> str | None:
    return next((kind for kind, names in GAZETTEER.items() if fold(word) in names), None)


def _entity_type(text: str) -> str:
    return next((t for w in text.split() if (t := _gazetteer_type(w)) is not None), "OTHER")


def _aspects(sentences: Sequence[str]) -> tuple[Aspect, ...]:
    """The noun each opinion word is about: the next word ("great battery"), else the nearest content word
    among the three before it ("the battery is great"), else among the three after it ("love this phone")."""
    opinions: dict[str, tuple[list[str], list[str]]] = {}
    for sentence in sentences:
        words = [w.lower() for w in _LETTERS.findall(sentence)]
        for index, word in enumerate(words):
            folded = fold(word)
            if folded not in LEXICON:
                continue
            before = [w for w in reversed(words[max(0, index - 3) : index]) if _is_content(w)]
            after = [w for w in words[index + 1 : index + 4] if _is_content(w)]
            if index + 1 < len(words) and _is_content(words[index + 1]):
                noun = words[index + 1]
            elif before or after:
                noun = (before or after)[0]
            else:
                continue
            positive, negative = opinions.setdefault(noun, ([], []))
            (positive if folded in POSITIVE else negative).append(word)
    return tuple(Aspect(noun, tuple(pos), tuple(neg)) for noun, (pos, neg) in opinions.items())


def sentiment_label(facts: TextFacts, enum: Sequence[Any]) -> Any:
    """positive / negative by which words occur; mixed when both (if offered, else the majority); neutral
    when none (or a tie), else the first value. Values are known by their first three letters (POS, NEG)."""
    by_name = {str(value).lower()[:3]: value for value in reversed(enum)}
    pos, neg = len(facts.positive), len(facts.negative)
    if pos and neg and "mix" in by_name:
        wanted = "mix"
    else:
        wanted = "pos" if pos > neg else "neg" if neg > pos else "neu"
    return by_name.get(wanted, by_name.get("neu", enum[0]))


def sentiment_score(facts: TextFacts) -> float:
    """(positive - negative) / (positive + negative) over word occurrences; 0.0 with none."""
    pos, neg = len(facts.positive), len(facts.negative)
    return round((pos - neg) / (pos + neg), 3) if pos + neg else 0.0


def confidence(facts: TextFacts) -> float:
    """0.5 with no opinion word, rising towards 0.99 with more: 0.5 + 0.49 * n / (n + 1)."""
    found = len(facts.positive) + len(facts.negative)
    return round(0.5 + 0.49 * found / (found + 1), 3)


def explanation(facts: TextFacts) -> str:
    def listed(words: Sequence[str]) -> str:
        return ", ".join(dict.fromkeys(words)) or "none"

    return f"Sentiment words found - positive: {listed(facts.positive)}; negative: {listed(facts.negative)}."


def summary(facts: TextFacts) -> str:
    """The first sentence, cut at a word boundary to at most 200 characters."""
    first = facts.sentences[0] if facts.sentences else ""
    if len(first) <= SUMMARY_MAX_CHARS:
        return first
    cut = first[:SUMMARY_MAX_CHARS]
    return cut.rsplit(" ", 1)[0] if " " in cut else cut


def _stems(word: str) -> set[str]:
    folded = fold(word)
    stems = {folded}
    for suffix in ("ing", "es", "s", "ed", "e"):
        if folded.endswith(suffix) and len(folded) - len(suffix) >= 3:
            stems.add(folded[: -len(suffix)])
    return stems


def category_counts(facts: TextFacts, enum: Sequence[Any]) -> list[int]:
    """For each enum value, how often its words (or their stems: brake ~ brakes ~ braking) occur."""
    text_stems = Counter(stem for word in facts.words for stem in _stems(word))
    counts = []
    for value in enum:
        value_words = [w for w in _LETTERS.findall(str(value)) if fold(w) not in ALL_STOPWORDS]
        counts.append(sum(max(text_stems[s] for s in _stems(w)) for w in value_words))
    return counts


def category(facts: TextFacts, enum: Sequence[Any]) -> Any:
    """The enum value mentioned most; the first one when none is mentioned."""
    counts = category_counts(facts, enum)
    best = max(range(len(enum)), key=lambda index: counts[index])
    return enum[best]
