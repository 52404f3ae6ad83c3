"""The ICD-10-CM code set as shipped by the `simple-icd-10-cm` package (the
CDC tabular list): descriptions, inclusion terms, Excludes1 notes, and the
code references inside notes ("Conditions classifiable to C15-C26",
"type 1 diabetes mellitus (E10.-)"), parsed into ranges a code can be tested
against."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import simple_icd_10_cm as icd

PACKAGE = "simple-icd-10-cm"
PACKAGE_VERSION = "1.5.0"

_CODE = r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{0,4})?"
_REFERENCE = re.compile(rf"({_CODE})(?:\s*-\s*({_CODE})|\.?-)?")


@dataclass(frozen=True)
class CodeRange:
    """Codes from `first` to `last` inclusive, compared on as many characters
    as each bound has (so "C15-C26" holds C18.9 and "E10.-" holds E10.9)."""
    first: str
    last: str

    def contains(self, code: str) -> bool:
        bare = code.replace(".", "")
        return bare[:len(self.first)] >= self.first and bare[:len(self.last)] <= self.last


def parse_references(text: str) -> list[CodeRange]:
    """The code ranges a note's text refers to: "C15-C26", "C50.-", "(E08.-)",
    "O10-O11, O13-O16", "C7A.022-C7A.025"."""
    ranges = []
    for match in _REFERENCE.finditer(text):
        first = match.group(1).replace(".", "")
        last = (match.group(2) or match.group(1)).replace(".", "")
        ranges.append(CodeRange(first, last))
    return ranges


def description(code: str) -> str:
    return icd.get_description(code)


def is_billable(code: str) -> bool:
    return icd.is_valid_item(code) and icd.is_leaf(code)


def inclusion_terms(code: str) -> list[str]:
    return list(icd.get_inclusion_term(code))


def all_billable_codes() -> list[str]:
    return [code for code in icd.get_all_codes(True) if icd.is_leaf(code)]


@functools.lru_cache(maxsize=None)
def excludes1_notes(code: str) -> tuple[tuple[str, str, tuple[CodeRange, ...]], ...]:
    """(code the note is on, note text, ranges it names) for the Excludes1 notes
    of `code` and of every level above it (a category's notes apply to all its
    subcategories)."""
    notes = []
    for level in [code, *icd.get_ancestors(code)]:
        for note in icd.get_excludes1(level):
            # The references are in the note's last parentheses: "(E08.-)".
            referenced = re.findall(r"\(([^()]*)\)\s*$", note)
            ranges = parse_references(referenced[0]) if referenced else []
            if ranges:
                notes.append((level, note, tuple(ranges)))
    return tuple(notes)


def excludes1_conflict(code: str, other: str) -> tuple[str, str] | None:
    """The Excludes1 note that makes `code` and `other` exclusive, as
    (the code whose note it is, the note), or None."""
    for owner, note, ranges in excludes1_notes(code):
        if any(r.contains(other) for r in ranges):
            return owner, note
    for owner, note, ranges in excludes1_notes(other):
        if any(r.contains(code) for r in ranges):
            return owner, note
    return None


@functools.lru_cache(maxsize=1)
def _classifiable_to() -> tuple[list[tuple[CodeRange, str]], list[tuple[CodeRange, str]]]:
    """From the notes "Conditions classifiable to …" of Z80–Z84 (family
    history) and Z85–Z87 (personal history): (range, history code) lists."""
    family, personal = [], []
    for code in all_billable_codes():
        if not code.startswith("Z8") or code[:3] > "Z87":
            continue
        for term in inclusion_terms(code):
            if "classifiable to" in term and "elsewhere" not in term:
                target = family if code[:3] <= "Z84" else personal
                for code_range in parse_references(term.split("classifiable to", 1)[1]):
                    target.append((code_range, code))
    return family, personal


def _most_specific(code: str, table: list[tuple[CodeRange, str]]) -> str | None:
    matches = [(len(r.first) + len(r.last), -(ord(r.last[-1]) - ord(r.first[-1])), z) for r, z in table if r.contains(code)]
    return max(matches)[2] if matches else None


def derived_family_history_code(code: str) -> str | None:
    return _most_specific(code, _classifiable_to()[0])


def derived_personal_history_code(code: str) -> str | None:
    return _most_specific(code, _classifiable_to()[1])
