"""The concept index: every billable ICD-10-CM code of chapters A–R (diseases,
symptoms) by its description and inclusion terms, plus the curated synonym
table, as bags of normalised words → code. Built once per process.

Chart words and index terms go through the same normalisation
(`matching_units`): abbreviations expanded, chart synonyms folded onto
tabular-list words, spelling folded, stemmed, stop words and the tabular
list's qualifiers of default codes ("unspecified", "NOS") left out. A term is
matched as a bag, so "cancer of the breast" and "breast cancer" are one key."""
from __future__ import annotations

import functools
import re
from collections import defaultdict
from dataclasses import dataclass

from . import codeset
from .abbreviations import WORD_SYNONYMS, expansion_of, word_synonym_of
from .concepts import CONCEPTS, Concept
from .text import TOKEN_PATTERN, damerau_levenshtein_at_most_one, normalise_word, stem

STOP_WORDS = frozenset(
    "of the a an or nor in on to for with his her their my your its is was were be been being "
    "has had have at by as from this that".split()
)
# Qualifiers that mark the tabular list's default code: a chart never says them.
DEFAULT_QUALIFIERS = frozenset({"unspecified", "nos", "specified"})
MAX_TERM_UNITS = 8
# Words that separate list items in a chart: no term spans them. ("and" is a
# unit of its own: it belongs to terms like "nausea and vomiting".)
LIST_SEPARATORS = frozenset({"or", "nor", "and/or"})

# Where a term came from, best first; confidence starts from it.
SOURCE_CURATED, SOURCE_TABULAR, SOURCE_TABULAR_HEAD = "curated synonym", "tabular list", "tabular list (head term)"
SOURCE_RANK = {SOURCE_CURATED: 0, SOURCE_TABULAR: 1, SOURCE_TABULAR_HEAD: 2}


@dataclass(frozen=True)
class Unit:
    """One matching unit of chart text: a normalised word and the token it came from."""
    form: str
    token_index: int
    abbreviation: bool = False
    corrected_from: str | None = None  # the chart's misspelt unit, when corrected
    # For a corrected unit: every index word one edit away (the term decides).
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Term:
    code: str
    text: str
    source: str


def matching_units(word: str, token_index: int = 0) -> list[Unit]:
    """The matching units of one word token (none for a stop word)."""
    abbreviation, forms = _word_forms(word)
    return [Unit(form, token_index, abbreviation) for form in forms]


@functools.lru_cache(maxsize=200_000)
def _word_forms(word: str) -> tuple[bool, tuple[str, ...]]:
    """(whether the word is an abbreviation, its normalised forms); words
    repeat across the tabular list and charts, so this is cached."""
    expansion = expansion_of(word)
    abbreviation = expansion is not None
    if expansion is None:
        expansion = word_synonym_of(word) or word
    forms = []
    for part in expansion.split():
        for form in normalise_word(part):
            synonym = word_synonym_of(form)
            folded = normalise_word(synonym) if synonym and synonym != form and " " not in synonym else [form]
            forms += [f for f in folded if f not in STOP_WORDS and f not in DEFAULT_QUALIFIERS]
    return abbreviation, tuple(forms)


def term_key_from_words(words: list[str]) -> tuple[str, ...] | None:
    forms = [form for word in words for form in _word_forms(word)[1]]
    if not forms or len(forms) > MAX_TERM_UNITS:
        return None
    return tuple(sorted(forms))


def term_key(text: str) -> tuple[str, ...] | None:
    """The bag-of-units key of an index term, or None when it has no content."""
    return term_key_from_words([m.group() for m in TOKEN_PATTERN.finditer(text) if m.group()[0].isalnum()])


def _term_variants(text: str, is_description: bool) -> list[tuple[str, bool]]:
    """Index variants of a tabular-list text: with (…) and […] asides dropped,
    with them kept, and its head (the part before the first comma) when the
    rest only qualifies a default ("Migraine, unspecified, not intractable")."""
    without_brackets = re.sub(r"\[[^\]]*\]", " ", text)
    dropped = re.sub(r"\([^)]*\)", " ", without_brackets)
    kept = without_brackets.replace("(", " ").replace(")", " ")
    variants = [(dropped, False), (kept, False)]
    head, comma, rest = dropped.partition(",")
    if is_description and comma and re.match(r"\s*unspecified\b", rest):
        variants.append((head, True))
    return variants


class ConceptIndex:
    """Bag-of-units term index over ICD-10-CM and the curated synonyms."""

    def __init__(self, concepts: tuple[Concept, ...] = CONCEPTS):
        self.concepts = {concept.code: concept for concept in concepts}
        self.terms: dict[tuple[str, ...], Term] = {}
        self._ranks: dict[tuple[str, ...], tuple] = {}
        for concept in concepts:
            if not codeset.is_billable(concept.code):
                raise ValueError(f"curated concept {concept.code} is not a billable code of {codeset.PACKAGE} {codeset.PACKAGE_VERSION}")
            for synonym in concept.synonyms:
                self._add(synonym, concept.code, SOURCE_CURATED, 0)
        for code in codeset.all_billable_codes():
            if code[0] > "R":
                continue  # injuries, external causes and Z codes are not coded from a condition word
            texts = [codeset.description(code), *codeset.inclusion_terms(code)]
            for position, text in enumerate(texts):
                if "classifiable" in text:
                    continue
                for variant, is_head in _term_variants(text, position == 0):
                    source = SOURCE_TABULAR_HEAD if is_head else SOURCE_TABULAR
                    self._add(variant, code, source, len(texts[0]))
        self.vocabulary = {form for key in self.terms for form in key}
        self._synonym_words = {stem(word) for word in WORD_SYNONYMS}
        self._deletes: dict[str, set[str]] = defaultdict(set)
        for form in self.vocabulary | self._synonym_words:
            if len(form) >= 5 and form.isalpha():
                self._deletes[form].add(form)
                for i in range(len(form)):
                    self._deletes[form[:i] + form[i + 1:]].add(form)
        self._key_frequency: dict[str, int] = defaultdict(int)
        for key in self.terms:
            for form in key:
                self._key_frequency[form] += 1

    def _add(self, text: str, code: str, source: str, description_length: int) -> None:
        key = term_key(text)
        if key is None:
            return
        # Curated first, then whole tabular terms, then heads; among equals the
        # code with the shortest description (the least qualified) and then the
        # lowest code.
        rank = (SOURCE_RANK[source], description_length, code)
        if key not in self._ranks or rank < self._ranks[key]:
            self._ranks[key] = rank
            self.terms[key] = Term(code, " ".join(text.split()), source)

    def lookup(self, key: tuple[str, ...]) -> Term | None:
        return self.terms.get(key)

    def spelling_corrections(self, form: str) -> list[str]:
        """The index words (and chart synonyms such as "cancer") one edit away
        from a word the index does not know, most frequent first; none for a
        known word or one shorter than five letters."""
        if len(form) < 5 or not form.isalpha() or form in self.vocabulary or form in self._synonym_words:
            return []
        candidates = set(self._deletes.get(form, ()))
        for i in range(len(form)):
            candidates |= self._deletes.get(form[:i] + form[i + 1:], set())
        close = [c for c in candidates if damerau_levenshtein_at_most_one(form, c)]
        return sorted(close, key=lambda c: (-self._key_frequency[c], c))


@functools.lru_cache(maxsize=1)
def default_index() -> ConceptIndex:
    """The process-wide index, built on first use."""
    return ConceptIndex()
