"""NegEx/ConText-style context of a concept mention inside its sentence:
negated, uncertain, historical, or about a family member.

Triggers are phrases matched on lower-cased tokens, longest first, so
"cannot be ruled out" (uncertain) wins over "ruled out" (negated) and
"family history of" (family) over "history of" (historical). A pre-trigger
covers the tokens after it, a post-trigger the tokens before it, up to a
scope terminator ("but", "however", ";", a clause that starts a positive
finding such as "presents with") or the end of the sentence. Pseudo-triggers
("no change", "gram negative", "not only") are consumed and trigger nothing."""
from __future__ import annotations

from dataclasses import dataclass

from .text import Token

NEGATED, UNCERTAIN, HISTORICAL, FAMILY = "negated", "uncertain", "historical", "family"

PRE_TRIGGERS = {
    NEGATED: [
        "no", "not", "denies", "denied", "deny", "denying", "without", "negative for", "no evidence of",
        "no signs of", "no sign of", "no evidence for", "free of", "absence of", "no complaints of",
        "does not have", "did not have", "never had", "never been diagnosed with", "no history of",
        "no hx of", "no h/o", "no personal history of", "rules out", "ruled out for",
        "fails to reveal", "no findings of", "nor", "not had", "no longer has",
    ],
    UNCERTAIN: [
        "possible", "possibly", "probable", "probably", "suspected", "suspect", "suspicion of",
        "suspicious for", "concern for", "concerning for", "worrisome for", "worried about", "questionable",
        "question of", "rule out", "r/o", "rule-out", "to rule out", "ruling out", "evaluate for",
        "evaluation for", "eval for", "workup for", "work up for", "cannot exclude", "can not exclude",
        "cannot rule out", "can't rule out", "could not rule out", "may have", "might have", "may be",
        "likely", "presumed", "presumptive", "consistent with", "compatible with", "differential includes",
        "differential diagnosis includes", "ddx includes", "ddx", "versus", "vs", "?",
        "not sure if", "unclear if", "uncertain if", "query",
    ],
    HISTORICAL: [
        "history of", "hx of", "h/o", "hx", "hx/o", "s/p", "status post", "prior", "previous", "previously",
        "past", "remote", "known", "past history of", "past medical history of", "personal history of",
        "history significant for", "treated for", "recovered from", "survivor of",
    ],
    FAMILY: [
        "family history of", "family history significant for", "fh of", "fhx of", "fhx", "family hx of",
        "mother", "father", "mom", "dad", "sister", "brother", "grandmother", "grandfather", "aunt",
        "uncle", "maternal", "paternal", "sibling", "siblings", "son", "daughter", "parent", "parents",
        "cousin", "grandparent", "grandparents", "twin", "relative", "relatives", "niece", "nephew",
        "mother's", "father's", "sister's", "brother's", "mom's", "dad's",
    ],
}
POST_TRIGGERS = {
    NEGATED: [
        "ruled out", "was ruled out", "is ruled out", "has been ruled out", "have been ruled out",
        "were ruled out", "been ruled out", "absent", "not seen", "not present", "not found",
        "unlikely", "is negative", "was negative", "not identified", "excluded", "was excluded",
        "is excluded",
    ],
    UNCERTAIN: [
        "is suspected", "was suspected", "suspected", "cannot be excluded", "cannot be ruled out",
        "can not be ruled out", "could not be ruled out", "not excluded", "not ruled out",
        "not been ruled out", "is possible", "possible", "is likely", "is probable", "is questionable",
        "?", "vs", "versus", "to be ruled out", "not yet ruled out", "remains a concern",
    ],
    HISTORICAL: [
        "in the past", "years ago", "year ago", "months ago", "as a child", "in childhood",
        "in remission", "resolved years ago", "previously", "in his twenties", "in her twenties",
        "in his youth", "in her youth", "decades ago", "resolved", "has resolved", "now resolved",
    ],
    FAMILY: [
        "in mother", "in her mother", "in his mother", "in father", "in her father", "in his father",
        "in the family", "in family", "runs in the family", "runs in family", "in siblings",
        "in a sibling", "in his brother", "in her brother", "in his sister", "in her sister",
        "in both parents", "in parents", "in grandmother", "in grandfather",
    ],
}
PSEUDO_TRIGGERS = [
    "no change", "no changes", "no increase", "no decrease", "no further", "no new", "not only",
    "not necessarily", "gram negative", "without difficulty", "not certain whether", "no significant change",
    "no interval change", "not cause", "not drain", "not extend", "no longer", "without any further",
    "history of present illness", "known allergies", "no known drug allergies",
    "no known allergies", "nkda", "not been ruled out", "not ruled out", "not excluded",
    "cannot be excluded", "cannot be ruled out", "can not be ruled out", "could not be ruled out",
    "not yet ruled out",
]
# End any trigger's scope: contrast, a new clause.
TERMINATORS = [
    "but", "however", "although", "though", "yet", "except", "aside from", "apart from", "other than",
    "which", "still", ";", "secondary to", "due to", "because of", "and is",
]
# End a negation's, an uncertainty's or a history's scope (not a family
# member's: "mother was diagnosed with"): a clause that reports a current finding.
CLAUSE_TERMINATORS = [
    "presents with", "presenting with", "reports", "reported", "complains of", "complaining of", "c/o",
    "endorses", "admits to", "positive for", "notable for", "now has", "now with", "currently has",
    "currently", "diagnosed with", "found to have", "has", "with new", "is being treated for",
    "here for", "seen for", "admitted with", "admitted for",
]
# Family scope also ends where the patient becomes the subject again.
FAMILY_TERMINATORS = ["patient", "pt", "he", "she", "the patient", "himself", "herself", "pt's", "patient's"]


@dataclass(frozen=True)
class Trigger:
    kind: str  # NEGATED, UNCERTAIN, HISTORICAL, FAMILY, "pseudo", "terminator", "family terminator"
    direction: str  # "pre", "post", "" for pseudo-triggers and terminators
    phrase: str
    first: int  # token indices, inclusive
    last: int


def _phrase_table() -> list[tuple[tuple[str, ...], str, str]]:
    table = []
    for kind, phrases in PRE_TRIGGERS.items():
        table += [(tuple(p.split()), kind, "pre") for p in phrases]
    for kind, phrases in POST_TRIGGERS.items():
        table += [(tuple(p.split()), kind, "post") for p in phrases]
    table += [(tuple(p.split()), "pseudo", "") for p in PSEUDO_TRIGGERS]
    table += [(tuple(p.split()), "terminator", "") for p in TERMINATORS]
    table += [(tuple(p.split()), "clause terminator", "") for p in CLAUSE_TERMINATORS]
    table += [(tuple(p.split()), "family terminator", "") for p in FAMILY_TERMINATORS]
    # Longest first; at equal length pseudo-triggers and terminators win.
    order = {"pseudo": 0, "terminator": 1, "clause terminator": 2, "family terminator": 3}
    table.sort(key=lambda entry: (-len(entry[0]), order.get(entry[1], 3)))
    return table


_PHRASES = _phrase_table()
_BY_FIRST_WORD: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
for _entry in _PHRASES:
    _BY_FIRST_WORD.setdefault(_entry[0][0], []).append(_entry)


def find_triggers(tokens: list[Token]) -> list[Trigger]:
    """Non-overlapping triggers in a sentence's tokens, left to right, longest first."""
    lowered = [t.lower.replace("’", "'") for t in tokens]
    triggers, i = [], 0
    while i < len(tokens):
        for words, kind, direction in _BY_FIRST_WORD.get(lowered[i], ()):
            if tuple(lowered[i:i + len(words)]) == words:
                # A year after "in" is a historical post-trigger handled below; a "pre"
                # trigger that is a post one too ("possible", "?", "vs") is both.
                triggers.append(Trigger(kind, direction, " ".join(words), i, i + len(words) - 1))
                also = [(k, d) for w, k, d in _BY_FIRST_WORD.get(lowered[i], ()) if w == words and (k, d) != (kind, direction)]
                triggers += [Trigger(k, d, " ".join(words), i, i + len(words) - 1) for k, d in also]
                i += len(words)
                break
        else:
            # "in 2019", "in 1998": a past year dates the mention.
            if lowered[i] == "in" and i + 1 < len(tokens) and lowered[i + 1].isdigit() and len(lowered[i + 1]) == 4:
                triggers.append(Trigger(HISTORICAL, "post", f"in {lowered[i + 1]}", i, i + 1))
                i += 2
                continue
            i += 1
    return triggers


def contexts_of(first: int, last: int, triggers: list[Trigger]) -> dict[str, Trigger]:
    """The contexts that cover the mention at tokens first..last, with the
    trigger that set each."""
    found: dict[str, Trigger] = {}
    for trigger in triggers:
        if trigger.kind not in (NEGATED, UNCERTAIN, HISTORICAL, FAMILY):
            continue
        if trigger.direction == "pre" and trigger.last < first:
            between = range(trigger.last + 1, first)
        elif trigger.direction == "post" and trigger.first > last:
            between = range(last + 1, trigger.first)
        else:
            continue
        blocked = any(t.first in between and _ends_scope(t.kind, trigger) for t in triggers)
        if blocked:
            continue
        # The nearest trigger of a kind explains it best.
        previous = found.get(trigger.kind)
        distance = len(between)
        if previous is None or distance < _distance(previous, first, last):
            found[trigger.kind] = trigger
    return found


def _ends_scope(terminator_kind: str, trigger: Trigger) -> bool:
    trigger_kind = trigger.kind
    if terminator_kind == "terminator":
        return True
    if terminator_kind == "clause terminator":
        # "PE has not been ruled out": a clause word between a mention and its
        # post-trigger is the mention's own clause.
        return trigger_kind != FAMILY and trigger.direction == "pre"
    if terminator_kind == "family terminator":
        return trigger_kind == FAMILY
    return False


def _distance(trigger: Trigger, first: int, last: int) -> int:
    return first - trigger.last - 1 if trigger.direction == "pre" else trigger.first - last - 1
