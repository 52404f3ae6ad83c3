"""Tokenisation, sentence splitting and word normalisation for chart text.

Every token keeps its character offsets into the original chart, so any span
built from tokens can be reported as `text[start:end]`."""
from __future__ import annotations

import re
from dataclasses import dataclass

# Slash abbreviations are single tokens ("h/o", "r/o", "s/p"); words keep inner
# hyphens and apostrophes ("a-fib", "Parkinson's"); numbers keep decimals;
# any other non-space character is a token of its own (punctuation).
_SLASH_ABBREVIATIONS = r"h/o|r/o|s/p|n/v|a/p|c/o|w/o|f/u|y/o|b/l|d/c|hx/o"
TOKEN_PATTERN = re.compile(
    rf"(?i:\b(?:{_SLASH_ABBREVIATIONS})(?![A-Za-z]))"
    r"|\d+(?:\.\d+)?(?![A-Za-z])"
    r"|[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*"
    r"|[^\sA-Za-z0-9]"
)
# A sentence ends at . ! ? (not a decimal point) or at the end of a line.
SENTENCE_PATTERN = re.compile(r"(?:[^.!?\n]|\.(?=\d))+[.!?]*")


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int

    @property
    def lower(self) -> str:
        return self.text.lower()

    @property
    def is_word(self) -> bool:
        return self.text[0].isalnum()


def tokenize(text: str, offset: int = 0) -> list[Token]:
    """Tokens of `text`, with offsets shifted by `offset` (the text's place in the chart)."""
    return [Token(m.group(), m.start() + offset, m.end() + offset) for m in TOKEN_PATTERN.finditer(text)]


def split_sentences(text: str, offset: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each non-blank sentence of `text`, shifted by `offset`."""
    spans = []
    for match in SENTENCE_PATTERN.finditer(text):
        sentence = match.group()
        if sentence.strip():
            lead = len(sentence) - len(sentence.lstrip())
            spans.append((match.start() + lead + offset, match.end() + offset))
    return spans


# British spellings and common variant spellings folded onto the tabular list's.
_SPELLING_FOLDS = [
    ("haem", "hem"), ("anaem", "anem"), ("oesophag", "esophag"), ("oedema", "edema"),
    ("tumour", "tumor"), ("ischaem", "ischem"), ("diarrhoea", "diarrhea"), ("paediatric", "pediatric"),
    ("leukaem", "leukem"), ("oestrogen", "estrogen"), ("foetal", "fetal"),
]


def stem(word: str) -> str:
    """A light, deterministic suffix stripper: enough to fold plurals and a few
    adjective forms onto the tabular list's nouns ("stones" → "stone",
    "kidneys" → "kidney", "arteries" → "artery")."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "ys")):
        return word[:-1]
    return word


def normalise_word(word: str) -> list[str]:
    """The matching units of one word token: lower-cased, split at hyphens and
    apostrophes (a possessive 's is dropped), spelling-folded and stemmed."""
    lowered = word.lower().replace("’", "'")
    if lowered.endswith("'s"):
        lowered = lowered[:-2]
    units = []
    for part in re.split(r"[-']", lowered):
        if not part:
            continue
        for british, american in _SPELLING_FOLDS:
            if british in part:
                part = part.replace(british, american)
        units.append(stem(part))
    return units


def damerau_levenshtein_at_most_one(a: str, b: str) -> bool:
    """Whether `a` and `b` differ by at most one insertion, deletion,
    substitution or transposition of adjacent letters."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diffs = [i for i in range(la) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return len(diffs) == 2 and diffs[1] == diffs[0] + 1 and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]]
    if la > lb:
        a, b = b, a
    # b is a with one letter inserted.
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:]
