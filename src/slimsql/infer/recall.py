"""The road's recall step: the taught examples most like a question, to show as demonstrations.

Offline and with nothing downloaded: Okapi BM25 over the examples' questions, with the values
of each question masked (numbers and quoted strings become one placeholder word), so that
"orders in 2023" finds "orders in 2021" by its shape, as DAIL-SQL's masked-question
similarity does. Verified examples outrank generated ones of close scores
(:data:`GENERATED_WEIGHT`). The index of a knowledge file is built once per loaded file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

from ..knowledge import Example, Knowledge

#: BM25's term-frequency saturation and length normalisation (the usual values).
K1, B = 1.2, 0.75
#: A generated example's score counts this much of a verified one's.
GENERATED_WEIGHT = 0.8
VALUE = "<value>"

_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'|“[^”]*”")
_NUMBER = re.compile(r"[+-]?\b\d+(?:[.,:/-]\d+)*\b")
_WORD = re.compile(r"<value>|[^\W_]+", re.UNICODE)
#: Words too common in questions to tell two apart.
STOP = frozenset("""a an the of in on at to for by with from and or is are was were be been do does did
what which who whom whose how many much there their them they it its this that these those all each
every any me show list give find return tell please i we our us you your""".split())


def words(question: str) -> list[str]:
    """A question as the words BM25 compares: lower case, values masked (a run of them, such as
    a phone number's groups, is one value), stop words out, a plural's final s dropped."""
    text = _NUMBER.sub(f" {VALUE} ", _QUOTED.sub(f" {VALUE} ", question.lower()))
    out: list[str] = []
    for word in _WORD.findall(text):
        if word in STOP or (word == VALUE and out and out[-1] == VALUE):
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


class ExampleIndex:
    """BM25 over the questions of a knowledge file's examples."""

    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)
        self._docs = [Counter(words(e.question)) for e in self.examples]
        self._lengths = [sum(d.values()) for d in self._docs]
        self._average = (sum(self._lengths) / len(self._lengths)) if self._lengths else 0.0
        frequency: Counter = Counter()
        for doc in self._docs:
            frequency.update(doc.keys())
        n = len(self._docs)
        self._idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in frequency.items()}

    def scores(self, question: str) -> list[float]:
        asked = set(words(question))  # a word asked twice counts once
        out = []
        for example, doc, length in zip(self.examples, self._docs, self._lengths):
            score = 0.0
            norm = K1 * (1 - B + B * length / self._average) if self._average else K1
            for word in asked:
                tf = doc.get(word, 0)
                if tf:
                    score += self._idf[word] * tf * (K1 + 1) / (tf + norm)
            out.append(score * (GENERATED_WEIGHT if example.source == "generated" else 1.0))
        return out

    def similar(self, question: str, k: int) -> list[Example]:
        """The ``k`` examples most like ``question``, the most similar last (nearest the question
        in the prompt); examples sharing no word with it are not shown."""
        if k <= 0 or not self.examples:
            return []
        scored = [(s, i) for i, s in enumerate(self.scores(question)) if s > 0]
        best = sorted(scored, key=lambda p: (-p[0], p[1]))[:k]
        return [self.examples[i] for _, i in reversed(best)]


_INDEXES: dict[int, tuple[Knowledge, ExampleIndex]] = {}


def index_for(knowledge: Knowledge) -> ExampleIndex:
    """The index of ``knowledge``'s examples, built once per loaded file (kept while it lives)."""
    found = _INDEXES.get(id(knowledge))
    if found is None or found[0] is not knowledge:
        if len(_INDEXES) > 64:
            _INDEXES.clear()
        found = _INDEXES[id(knowledge)] = (knowledge, ExampleIndex(knowledge.ranked_examples()))
    return found[1]


def recall(knowledge: Knowledge | None, question: str, k: int) -> list[Example]:
    """The demonstrations for ``question``: up to ``k`` of the taught examples."""
    if not knowledge or not knowledge.examples or k <= 0:
        return []
    return index_for(knowledge).similar(question, k)
