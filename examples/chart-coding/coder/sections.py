"""Chart section headers: a header starts a line ("PMH:", "Family History:",
"ASSESSMENT AND PLAN") and names the section of everything after it, on its
own line and the lines below, up to the next header."""
from __future__ import annotations

import re
from dataclasses import dataclass

# Canonical section → the headers that open it (matched case-insensitively).
SECTION_HEADERS = {
    "chief complaint": ["chief complaint", "cc", "reason for visit", "reason for admission"],
    "history of present illness": ["history of present illness", "hpi", "present illness", "interval history", "subjective",
                                   "hospital course", "brief hospital course", "clinical course", "ed course"],
    "past medical history": ["past medical history", "pmh", "pmhx", "medical history", "past history", "problem list", "past medical/surgical history"],
    "past surgical history": ["past surgical history", "psh", "surgical history"],
    "family history": ["family history", "fh", "fhx", "family hx", "family medical history"],
    "social history": ["social history", "sh", "social hx"],
    "medications": ["medications", "meds", "current medications", "home medications"],
    "allergies": ["allergies", "allergy"],
    "review of systems": ["review of systems", "ros"],
    "physical exam": ["physical exam", "physical examination", "pe", "exam", "objective"],
    "results": ["labs", "laboratory", "imaging", "results", "studies"],
    "assessment and plan": ["assessment and plan", "assessment & plan", "assessment/plan", "a/p", "a&p", "impression and plan", "assessment", "impression", "diagnoses", "diagnosis", "plan",
                            "discharge diagnoses", "discharge diagnosis", "admission diagnoses", "admission diagnosis",
                            "final diagnoses", "final diagnosis", "principal diagnosis", "secondary diagnoses",
                            "primary diagnosis", "working diagnosis"],
}
_HEADER_TO_SECTION = {header: section for section, headers in SECTION_HEADERS.items() for header in headers}
_HEADER_PATTERN = re.compile(
    r"^[ \t]*(?P<header>" + "|".join(re.escape(h) for h in sorted(_HEADER_TO_SECTION, key=len, reverse=True)) + r")"
    r"[ \t]*(?::|-(?=\s)|$)",
    re.IGNORECASE | re.MULTILINE,
)
UNSECTIONED = "unsectioned"


@dataclass(frozen=True)
class Section:
    name: str
    header_start: int  # where the header starts (the section's text starts at `start`)
    start: int
    end: int


def find_sections(text: str) -> list[Section]:
    """The chart's sections in order; text before the first header is `unsectioned`."""
    sections = []
    headers = list(_HEADER_PATTERN.finditer(text))
    if not headers or headers[0].start("header") > 0 and text[: headers[0].start()].strip():
        first_end = headers[0].start() if headers else len(text)
        sections.append(Section(UNSECTIONED, 0, 0, first_end))
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        name = _HEADER_TO_SECTION[match.group("header").lower()]
        sections.append(Section(name, match.start("header"), match.end(), end))
    return sections
