"""The chart coder: chart text in, ICD-10-CM codes with their evidence out.

Per section and sentence: tokens → matching units (abbreviations expanded,
misspellings corrected against the index's words) → the longest
non-overlapping index terms → each mention's context (negated, uncertain,
historical, family) from its sentence's triggers and its section → a code
(the condition's, its personal-history or family-history code) or a dropped
mention with its reason → Excludes1 between the codes kept."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import codeset
from .context import FAMILY, HISTORICAL, NEGATED, UNCERTAIN, Trigger, contexts_of, find_triggers
from .abbreviations import word_synonym_of
from .lexicon import LIST_SEPARATORS, MAX_TERM_UNITS, SOURCE_CURATED, SOURCE_TABULAR, ConceptIndex, Term, Unit, default_index, matching_units
from .sections import find_sections
from .text import Token, split_sentences, tokenize

BASE_CONFIDENCE = {SOURCE_CURATED: 0.9, SOURCE_TABULAR: 0.92}
HEAD_TERM_CONFIDENCE = 0.8
# Single words of the tabular list too vague to code alone from a chart.
TOO_VAGUE_ALONE = frozenset({"pain", "disease", "disorder", "syndrome", "infection", "failure", "injury", "mass", "lesion", "abnormality", "complication", "condition", "problem", "illness", "symptom", "other", "acute", "chronic", "history", "rate", "test", "exam", "examination", "weakness", "discharge", "deformity", "swelling", "shock", "pressure"})
HISTORY_SECTIONS = {"past medical history", "past surgical history"}


@dataclass
class Mention:
    term: Term
    start: int
    end: int
    evidence: str
    section: str
    abbreviation: bool
    corrected: list[str]
    contexts: dict[str, Trigger]
    section_context: str | None
    sentence_tokens: list[Token] = field(repr=False)


@dataclass
class CodedMention:
    code: str
    context: str  # "current", "history", "family"
    mention: Mention
    confidence: float
    condition_code: str


class ChartCoder:
    def __init__(self, index: ConceptIndex | None = None):
        self.index = index or default_index()

    # Mentions ---------------------------------------------------------------

    def find_mentions(self, text: str) -> list[Mention]:
        mentions = []
        for section in find_sections(text):
            for start, end in split_sentences(text[section.start:section.end], section.start):
                tokens = tokenize(text[start:end], start)
                mentions += self._sentence_mentions(text, tokens, section.name)
        return mentions

    def _sentence_mentions(self, text: str, tokens: list[Token], section: str) -> list[Mention]:
        units: list[Unit | None] = []
        for index, token in enumerate(tokens):
            if not token.is_word or token.lower in LIST_SEPARATORS:
                units.append(None)  # punctuation, "or": no term spans it
                continue
            for unit in matching_units(token.text, index):
                if unit.form not in self.index.vocabulary and not unit.abbreviation:
                    corrections = self.index.spelling_corrections(unit.form)
                    if corrections:
                        unit = Unit(corrections[0], index, False, unit.form, tuple(corrections))
                units.append(unit)
        candidates = []
        for i, first_unit in enumerate(units):
            if first_unit is None or (i > 0 and units[i - 1] is not None and units[i - 1].token_index == first_unit.token_index):
                continue  # a term starts at a token's first unit
            for length in range(1, MAX_TERM_UNITS + 1):
                window = units[i:i + length]
                if len(window) < length or window[-1] is None:
                    break
                after = units[i + length] if i + length < len(units) else None
                if after is not None and after.token_index == window[-1].token_index:
                    continue  # and ends at a token's last unit
                found = self._lookup_window(window)
                if found is None:
                    continue
                window, term = found
                candidates.append((length, i, window, term))
        chosen, taken = [], set()
        for length, i, window, term in sorted(candidates, key=lambda c: (-c[0], c[1])):
            token_range = range(window[0].token_index, window[-1].token_index + 1)
            if taken.intersection(token_range):
                continue
            taken.update(token_range)
            chosen.append((window, term))
        if not chosen:
            return []
        triggers = find_triggers(tokens)
        mentions = []
        for window, term in sorted(chosen, key=lambda c: c[0][0].token_index):
            first, last = window[0].token_index, window[-1].token_index
            start, end = tokens[first].start, tokens[last].end
            section_context = FAMILY if section == "family history" else HISTORICAL if section in HISTORY_SECTIONS else None
            mentions.append(Mention(
                term=term, start=start, end=end, evidence=text[start:end], section=section,
                abbreviation=any(u.abbreviation for u in window),
                corrected=[u.corrected_from for u in window if u.corrected_from],
                contexts=contexts_of(first, last, triggers), section_context=section_context,
                sentence_tokens=tokens,
            ))
        return mentions

    def _lookup_window(self, window: list[Unit]) -> tuple[list[Unit], Term] | None:
        """The term a window of units matches, trying each spelling correction
        of a misspelt unit (a misspelt word of a synonym such as "cancer" is
        expanded to the tabular list's words), and the window as matched."""
        options: list[list[Unit]] = [[]]
        for unit in window:
            if not unit.alternatives:
                options = [o + [unit] for o in options]
                continue
            expanded = []
            for alternative in unit.alternatives:
                synonym = word_synonym_of(alternative)
                forms = synonym.split() if synonym else [alternative]
                expanded.append([Unit(f, unit.token_index, False, unit.corrected_from) for f in forms])
            options = [o + e for o in options for e in expanded][:64]
        for option in options:
            term = self.index.lookup(tuple(sorted(u.form for u in option)))
            if term is not None and self._acceptable(term, option):
                return option, term
        return None

    def _acceptable(self, term: Term, window: list[Unit]) -> bool:
        if len(window) == 1:
            unit = window[0]
            if term.source != SOURCE_CURATED and (unit.form in TOO_VAGUE_ALONE or len(unit.form) < 4):
                return False
            if unit.corrected_from and (len(unit.corrected_from) < 5 or term.source != SOURCE_CURATED):
                return False
        # A misspelling corrected in every word of a term is too weak a match.
        return not all(u.corrected_from for u in window) or len(window) == 1

    # Coding -----------------------------------------------------------------

    def code(self, text: str) -> dict:
        """The coding of one chart as a JSON-ready dict."""
        coded: list[CodedMention] = []
        dropped: list[dict] = []
        for mention in self.find_mentions(text):
            outcome = self._code_mention(mention)
            if isinstance(outcome, CodedMention):
                coded.append(outcome)
            else:
                dropped.append(outcome)
        codes = self._merge(coded)
        codes, less_specific = self._drop_less_specific(codes)
        codes, excluded = self._apply_excludes1(codes)
        return {
            "code_set": f"ICD-10-CM ({codeset.PACKAGE} {codeset.PACKAGE_VERSION})",
            "codes": codes,
            "dropped": dropped + less_specific + excluded,
        }

    def _code_mention(self, mention: Mention) -> CodedMention | dict:
        condition = mention.term.code
        concept = self.index.concepts.get(condition)
        contexts = mention.contexts
        if NEGATED in contexts:
            return _dropped(mention, condition, "negated", f'negation trigger "{contexts[NEGATED].phrase}"')
        if UNCERTAIN in contexts:
            return _dropped(mention, condition, "uncertain", f'uncertainty trigger "{contexts[UNCERTAIN].phrase}" (uncertain diagnoses are not coded; outpatient rule, ICD-10-CM guidelines IV.H)')
        confidence = self._confidence(mention)
        if FAMILY in contexts or (mention.section_context == FAMILY and not _patient_is_subject(mention)):
            family_code = (concept.family if concept else None) or codeset.derived_family_history_code(condition)
            if family_code is None:
                if condition[0] == "R":
                    return _dropped(mention, condition, "family", "a family member's symptom has no family-history code")
                family_code = "Z82.49" if condition[0] == "I" else "Z84.89"
            return CodedMention(family_code, "family", mention, confidence * 0.95, condition)
        if HISTORICAL in contexts or mention.section_context == HISTORICAL:
            if concept is not None and concept.chronic:
                return CodedMention(condition, "current", mention, confidence, condition)
            history_code = (concept.history if concept else None) or codeset.derived_personal_history_code(condition)
            if history_code:
                return CodedMention(history_code, "history", mention, confidence * 0.95, condition)
            if concept is not None or condition[0] == "R":
                return _dropped(mention, condition, "historical", "a resolved condition with no personal-history code")
            # Not curated: whether it persists is unknown; code it, less sure.
            return CodedMention(condition, "current", mention, confidence * 0.7, condition)
        return CodedMention(condition, "current", mention, confidence, condition)

    def _confidence(self, mention: Mention) -> float:
        term = mention.term
        confidence = BASE_CONFIDENCE.get(term.source, HEAD_TERM_CONFIDENCE)
        if mention.abbreviation:
            confidence -= 0.04
        if mention.corrected:
            confidence -= 0.15
        if mention.section == "assessment and plan":
            confidence += 0.05
        return max(0.0, min(1.0, confidence))

    def _merge(self, coded: list[CodedMention]) -> list[dict]:
        by_code: dict[str, list[CodedMention]] = {}
        for item in coded:
            by_code.setdefault(item.code, []).append(item)
        codes = []
        for code, items in by_code.items():
            best = max(items, key=lambda item: item.confidence)
            confidence = min(0.99, best.confidence + 0.03 * (len(items) - 1))
            codes.append({
                "code": code,
                "description": codeset.description(code),
                "context": best.context,
                "condition_code": best.condition_code,
                "evidence": best.mention.evidence,
                "start": best.mention.start,
                "end": best.mention.end,
                "section": best.mention.section,
                "confidence": round(confidence, 3),
                "matched_term": best.mention.term.text,
                "term_source": best.mention.term.source,
                "mentions": [
                    {"evidence": i.mention.evidence, "start": i.mention.start, "end": i.mention.end,
                     "section": i.mention.section, "condition_code": i.condition_code}
                    for i in items
                ],
            })
        codes.sort(key=lambda c: c["start"])
        return codes

    def _drop_less_specific(self, codes: list[dict]) -> tuple[list[dict], list[dict]]:
        """A curated default code ("CKD" → N18.9) gives way to a more specific
        code of the same category found elsewhere in the chart ("CKD stage 3"
        → N18.30): one condition, coded once, as specifically as charted."""
        kept, dropped = [], []
        for code in codes:
            specific = next((
                other for other in codes
                if other is not code and other["code"][:3] == code["code"][:3] and other["context"] == code["context"] == "current"
                and code["code"] in self.index.concepts and other["code"] not in self.index.concepts
            ), None)
            if specific is None:
                kept.append(code)
                continue
            dropped.append({
                "code": code["code"], "evidence": code["evidence"], "start": code["start"], "end": code["end"],
                "section": code["section"], "reason": "less specific",
                "why": f'{specific["code"]} ("{specific["evidence"]}") codes the same condition more specifically',
            })
        return kept, dropped

    def _apply_excludes1(self, codes: list[dict]) -> tuple[list[dict], list[dict]]:
        """Of two codes an Excludes1 note makes exclusive, keep the better
        supported (confidence, then mentions, then the earlier) and drop the other."""
        def support(c: dict) -> tuple:
            return (c["confidence"], len(c["mentions"]), -c["start"])

        kept, dropped = list(codes), []
        for candidate in sorted(codes, key=support):
            for other in kept:
                if other is candidate:
                    continue
                conflict = codeset.excludes1_conflict(candidate["code"], other["code"])
                if conflict and support(other) > support(candidate):
                    owner, note = conflict
                    kept.remove(candidate)
                    dropped.append({
                        "code": candidate["code"],
                        "evidence": candidate["evidence"],
                        "start": candidate["start"],
                        "end": candidate["end"],
                        "section": candidate["section"],
                        "reason": "excludes1",
                        "why": (f'{owner} Excludes1 "{note}": {other["code"]} kept, better supported '
                                f'(confidence {other["confidence"]}, {len(other["mentions"])} mention(s)) than {candidate["code"]} '
                                f'(confidence {candidate["confidence"]}, {len(candidate["mentions"])} mention(s))'),
                    })
                    break
        return kept, dropped


def _patient_is_subject(mention: Mention) -> bool:
    """In a family-history section, a sentence about the patient ("Patient has
    no family history…" aside) is not about a relative."""
    words = {t.lower for t in mention.sentence_tokens}
    return bool(words & {"patient", "pt", "he", "she"}) and not words & {
        "mother", "father", "sister", "brother", "mom", "dad", "grandmother", "grandfather", "aunt", "uncle",
        "family", "maternal", "paternal", "sibling", "son", "daughter", "parents", "parent"}


def _dropped(mention: Mention, code: str, reason: str, why: str) -> dict:
    return {
        "code": code,
        "evidence": mention.evidence,
        "start": mention.start,
        "end": mention.end,
        "section": mention.section,
        "reason": reason,
        "why": why,
    }
