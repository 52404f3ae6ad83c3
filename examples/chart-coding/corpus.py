#!/usr/bin/env python3
"""Synthetic clinical charts with gold ICD-10-CM codes known by construction.

Each chart is built from sections (CC, HPI, PMH, medications, family and
social history, ROS, exam, assessment and plan) and 3–7 condition mentions,
each in one category:

- positive: the patient has it now → the condition's code;
- negated: "denies …", "no evidence of …" → nothing coded;
- uncertain: "rule out …", "possible …" → nothing coded;
- history: a past condition → its personal-history code (I25.2, Z86.73,
  Z85.3, …), or the condition's own code for a chronic one;
- family: a relative's condition → its family-history code (Z80.3, …);
- misspelled: a positive mention with one typing error in a long word.

Half the charts put two mentions in one sentence ("No fever but reports
cough."), so a trigger's scope must end in the right place. Conditions are
named with lay terms, paraphrases and abbreviations, never with an ICD-10-CM
description copied verbatim (checked at generation).

Two splits: `tuning` (seeds from 1,000) and `heldout` (seeds from 500,000),
and the held-out split also uses sentence templates and condition wordings
that the tuning split never has. The coder was tuned on `tuning` only.

    python3 corpus.py --split heldout --count 2000 --out heldout.jsonl
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from dataclasses import dataclass

import simple_icd_10_cm as icd

SPLITS = {"tuning": 1_000, "heldout": 500_000}
CATEGORIES = ("positive", "negated", "uncertain", "history", "family", "misspelled")


@dataclass(frozen=True)
class Condition:
    key: str
    code: str
    forms: tuple[str, ...]  # wordings both splits use
    heldout_forms: tuple[str, ...]  # wordings only the held-out split uses
    history: str | None  # gold code for a past mention ("self": the condition's own code, it persists)
    family: str | None  # gold code for a relative's


C = Condition
CONDITIONS = (
    C("hypertension", "I10", ("HTN", "high blood pressure", "hypertension"), ("high BP", "hypertensive disease"), "self", "Z82.49"),
    C("t2dm", "E11.9", ("DM2", "type 2 diabetes", "T2DM", "diabetes mellitus type 2"), ("type II DM", "adult-onset diabetes"), "self", "Z83.3"),
    C("t1dm", "E10.9", ("type 1 diabetes", "T1DM", "DM1"), ("juvenile-onset diabetes",), "self", "Z83.3"),
    C("chf", "I50.9", ("CHF", "congestive heart failure", "heart failure"), ("HFrEF", "weak heart muscle"), "self", "Z82.49"),
    C("mi", "I21.9", ("MI", "heart attack", "myocardial infarction"), ("acute MI",), "I25.2", "Z82.49"),
    C("cad", "I25.10", ("CAD", "coronary artery disease"), ("coronary atherosclerosis", "ASCVD"), "self", "Z82.49"),
    C("afib", "I48.91", ("AFib", "atrial fibrillation", "a-fib"), ("AF",), "self", "Z82.49"),
    C("stroke", "I63.9", ("stroke", "CVA"), ("cerebral infarct",), "Z86.73", "Z82.3"),
    C("tia", "G45.9", ("TIA", "transient ischemic attack", "mini-stroke"), (), "Z86.73", None),
    C("pe", "I26.99", ("PE", "pulmonary embolism", "blood clot in the lung"), ("pulmonary embolus",), "Z86.711", None),
    C("dvt", "I82.409", ("DVT", "deep vein thrombosis", "blood clot in the leg"), ("deep venous thrombosis of the leg",), "Z86.718", None),
    C("pvd", "I73.9", ("PVD", "peripheral vascular disease", "PAD"), ("poor circulation in the legs",), "self", "Z82.49"),
    C("hypotension", "I95.9", ("low blood pressure", "hypotension"), ("hypotensive episode",), None, None),
    C("hld", "E78.5", ("HLD", "hyperlipidemia", "high cholesterol"), ("dyslipidemia",), "self", "Z83.49"),
    C("obesity", "E66.9", ("obesity", "obese"), (), "self", None),
    C("hypothyroid", "E03.9", ("hypothyroidism", "underactive thyroid", "hypothyroid"), ("low thyroid function",), "self", "Z83.49"),
    C("hyperthyroid", "E05.90", ("hyperthyroidism", "overactive thyroid"), (), "self", None),
    C("hyponatremia", "E87.1", ("hyponatremia", "low sodium"), ("hyponatremic",), None, None),
    C("hypokalemia", "E87.6", ("low potassium", "hypokalemic"), ("potassium deficiency",), None, None),
    C("copd", "J44.9", ("COPD", "chronic obstructive lung disease"), ("chronic obstructive airways disease",), "self", "Z82.5"),
    C("asthma", "J45.909", ("asthma", "reactive airway disease"), ("bronchial asthma",), "self", "Z82.5"),
    C("pneumonia", "J18.9", ("pneumonia", "PNA", "lung infection"), ("CAP",), "Z87.01", None),
    C("uri", "J06.9", ("URI", "upper respiratory infection", "head cold"), ("viral URI",), None, None),
    C("pharyngitis", "J02.9", ("sore throat", "pharyngitis"), ("throat infection",), None, None),
    C("sinusitis", "J01.90", ("sinus infection", "acute sinusitis"), ("sinusitis",), None, None),
    C("osa", "G47.33", ("OSA", "obstructive apnea"), ("OSA on CPAP",), "self", None),
    C("sob", "R06.02", ("SOB", "short of breath", "breathless"), ("winded", "dyspneic"), None, None),
    C("wheezing", "R06.2", ("wheezes", "wheezy"), ("expiratory wheeze",), None, None),
    C("cough", "R05.9", ("cough", "coughing"), ("hacking cough",), None, None),
    C("gerd", "K21.9", ("GERD", "acid reflux", "reflux disease"), ("gastroesophageal reflux",), "self", None),
    C("diverticulosis", "K57.30", ("diverticulosis", "diverticular disease"), (), "self", None),
    C("gallstones", "K80.20", ("gallstones", "cholelithiasis"), ("stones in the gallbladder",), None, None),
    C("gibleed", "K92.2", ("GI bleed", "gastrointestinal bleeding"), ("bleeding from the gut",), None, None),
    C("cirrhosis", "K74.60", ("cirrhosis", "liver cirrhosis"), ("cirrhosis of the liver",), "self", None),
    C("nausea", "R11.2", ("n/v", "nausea and vomiting"), ("vomiting and nausea",), None, None),
    C("abdpain", "R10.9", ("abd pain", "abdominal pain", "belly pain"), ("stomach ache",), None, None),
    C("ckd", "N18.9", ("CKD", "chronic kidney disease"), ("chronic renal insufficiency",), "self", "Z84.19"),
    C("aki", "N17.9", ("AKI", "acute kidney injury", "acute renal failure"), ("ARF",), None, None),
    C("uti", "N39.0", ("UTI", "urinary tract infection", "urinary infection"), ("urine infection",), "Z87.440", None),
    C("bph", "N40.0", ("BPH", "enlarged prostate"), ("benign prostatic hypertrophy",), "self", None),
    C("breastca", "C50.919", ("breast cancer", "breast CA", "carcinoma of the breast"), ("breast malignancy",), "Z85.3", "Z80.3"),
    C("prostateca", "C61", ("prostate cancer", "CA prostate"), ("prostatic carcinoma",), "Z85.46", "Z80.42"),
    C("lungca", "C34.90", ("lung cancer", "lung CA"), ("bronchogenic carcinoma",), "Z85.118", "Z80.1"),
    C("colonca", "C18.9", ("colon cancer", "cancer of the colon"), ("colonic adenocarcinoma",), "Z85.038", "Z80.0"),
    C("ovarianca", "C56.9", ("ovarian cancer", "cancer of the ovary"), ("ovarian carcinoma",), "Z85.43", "Z80.41"),
    C("anemia", "D64.9", ("anemia", "anaemia", "low hemoglobin"), ("low blood count",), "self", None),
    C("depression", "F32.A", ("depression", "depressive disorder"), ("clinical depression",), "self", "Z81.8"),
    C("anxiety", "F41.9", ("anxiety", "anxiety disorder"), ("anxious",), "self", "Z81.8"),
    C("alcohol", "F10.20", ("alcohol dependence", "alcoholism", "EtOH dependence"), ("alcohol use disorder",), "self", "Z81.1"),
    C("dementia", "F03.90", ("dementia",), ("senile dementia",), "self", "Z81.8"),
    C("migraine", "G43.909", ("migraine", "migraine headaches"), ("migrainous headache",), "self", "Z82.0"),
    C("epilepsy", "G40.909", ("epilepsy", "seizure disorder"), ("sz disorder",), "self", "Z82.0"),
    C("headache", "R51.9", ("headache", "HA"), ("head pain",), None, None),
    C("dizziness", "R42", ("dizziness", "lightheadedness", "dizzy"), ("light-headed",), None, None),
    C("lbp", "M54.50", ("low back pain", "LBP"), ("lumbago",), None, None),
    C("oa", "M19.90", ("osteoarthritis", "DJD", "degenerative joint disease"), ("OA",), "self", "Z82.61"),
    C("osteoporosis", "M81.0", ("osteoporosis", "thinning bones"), ("brittle bones",), "self", "Z82.62"),
    C("sepsis", "A41.9", ("sepsis", "septicemia"), ("septic",), None, None),
    C("cellulitis", "L03.90", ("cellulitis",), (), None, None),
    C("otitis", "H66.90", ("ear infection", "otitis media"), ("middle ear infection",), None, None),
    C("chestpain", "R07.9", ("chest pain", "CP"), ("pain in the chest",), None, None),
    C("fever", "R50.9", ("fever", "febrile"), ("pyrexia",), None, None),
    C("fatigue", "R53.83", ("fatigue", "tiredness"), ("low energy",), None, None),
)
# Never in one chart: an Excludes1 pair would make the gold depend on which one the coder keeps.
EXCLUSIVE = [{"t1dm", "t2dm"}, {"asthma", "wheezing"}]

# Sentence frames by category and section; {c} is the condition's wording,
# {C} the same capitalised. HELDOUT_FRAMES are only in the held-out split.
FRAMES = {
    ("positive", "hpi"): ["Patient presents with {c}.", "{age} y/o {sex} here for {c}.", "Reports {c} for the past {n} days.", "Pt c/o {c}.", "Complains of {c} since yesterday.", "Seen today for {c}."],
    ("positive", "ap"): ["{i}. {C} - continue current management.", "{i}. {C}, stable.", "{i}. {C}: start treatment and recheck in {n} weeks."],
    ("misspelled", "hpi"): ["Patient presents with {c}.", "Pt c/o {c}.", "Reports {c} for the past {n} days."],
    ("misspelled", "ap"): ["{i}. {C} - continue current management.", "{i}. {C}, stable."],
    ("negated", "hpi"): ["Denies {c}.", "No {c}.", "Patient denies any {c}.", "No evidence of {c}."],
    ("negated", "ros"): ["Negative for {c}.", "Denies {c}.", "No {c}."],
    ("uncertain", "ap"): ["{i}. Possible {c}.", "{i}. Rule out {c}.", "{i}. r/o {c}", "{i}. {C} is suspected.", "{i}. Cannot exclude {c}."],
    ("uncertain", "hpi"): ["Possible {c}.", "Workup for {c} is pending."],
    ("history", "pmh"): ["{C}", "h/o {c}", "History of {c}"],
    ("history", "hpi"): ["History of {c}.", "h/o {c}.", "s/p {c} in {year}.", "Prior {c}."],
    ("family", "fh"): ["Mother had {c}.", "Father with {c}.", "Sister - {c}.", "Family history of {c}."],
    ("family", "hpi"): ["Family history of {c}.", "Her mother had {c}."],
}
HELDOUT_FRAMES = {
    ("positive", "hpi"): ["Chief concern is {c}, which started {n} days ago.", "The patient was admitted with {c}.", "Has had {c} that is getting worse."],
    ("positive", "ap"): ["{i}. {C} -- will follow closely.", "{i}. {C}, worsening; adjust therapy."],
    ("misspelled", "hpi"): ["The patient was admitted with {c}."],
    ("negated", "hpi"): ["Free of {c}.", "There are no signs of {c}.", "She does not have {c}."],
    ("negated", "ros"): ["Without {c}.", "{C} was ruled out."],
    ("uncertain", "ap"): ["{i}. Concern for {c}, will obtain further workup.", "{i}. Differential includes {c}.", "{i}. {C} cannot be ruled out.", "{i}. Questionable {c}."],
    ("history", "hpi"): ["{C} {n} years ago.", "Remote {c}.", "Had {c} in {year}."],
    ("family", "fh"): ["{C} runs in the family.", "Maternal grandmother had {c}.", "Both parents have {c}."],
    ("family", "hpi"): ["Her brother was diagnosed with {c}."],
}
# Two mentions in one sentence: (first category, second category) → frames.
PAIR_FRAMES = {
    ("negated", "positive"): ["No {a} but reports {b}.", "Denies {a}; has {b}."],
    ("negated", "negated"): ["Denies {a} or {b}.", "No {a}, {b}."],
    ("positive", "negated"): ["Presents with {a}, denies {b}.", "{A} for 3 days, no {b}."],
    ("family", "positive"): ["Mother had {a}; patient has {b}."],
    ("history", "positive"): ["History of {a}, now presents with {b}."],
    ("uncertain", "negated"): ["Possible {a}, no {b}."],
}
HELDOUT_PAIR_FRAMES = {
    ("negated", "positive"): ["Without {a}, however {b} is present."],
    ("negated", "negated"): ["Negative for {a} and {b}."],
    ("positive", "negated"): ["{A} noted, no {b}."],
    ("family", "positive"): ["Her father had {a}, and she has {b}."],
    ("uncertain", "positive"): ["Possible {a}, but definite {b}."],
    ("history", "negated"): ["History of {a}, no {b} since."],
}
PLACES = {"positive": ["hpi", "ap"], "misspelled": ["hpi", "ap"], "negated": ["hpi", "ros"], "uncertain": ["ap", "hpi"], "history": ["pmh", "hpi"], "family": ["fh", "hpi"]}
CATEGORY_WEIGHTS = {"positive": 32, "negated": 20, "uncertain": 12, "history": 14, "family": 10, "misspelled": 12}

# Sentences with no codable condition.
FILLER = {
    "hpi": ["Symptoms began gradually.", "Appetite is normal.", "Sleeping well.", "Walks two miles daily."],
    "ros": ["All other systems reviewed.", "Otherwise negative except as noted."],
    "exam": ["Vitals stable.", "Lungs clear to auscultation bilaterally.", "Heart regular rate and rhythm.", "Alert and oriented x3.", "Abdomen soft, nontender.", "Extremities warm and well perfused."],
    "social": ["Lives with spouse.", "Works as a teacher.", "Drinks coffee daily.", "Retired mechanic, lives alone."],
    "meds": ["lisinopril 10 mg daily", "metformin 500 mg twice daily", "atorvastatin 40 mg nightly", "albuterol inhaler as needed", "omeprazole 20 mg daily", "aspirin 81 mg daily"],
    "plan": ["Follow up in {n} weeks.", "Return precautions given.", "Labs ordered."],
}


def is_abbreviated(wording: str) -> bool:
    """Whether a wording uses an abbreviation ("HTN", "n/v", "AFib", "breast CA")."""
    return any(sum(ch.isupper() for ch in word) >= 2 or "/" in word for word in wording.split())


def misspell(form: str, rng: random.Random) -> str | None:
    """The wording with one typing error in its longest word of six letters or
    more (dropped, doubled or swapped letters, or a neighbouring key), or None
    when it has no such word (abbreviations are never misspelt)."""
    words = [w for w in re.findall(r"[a-z]{6,}", form)]
    if not words:
        return None
    word = max(words, key=len)
    position = rng.randrange(1, len(word) - 1)
    operation = rng.choice(["drop", "double", "swap", "key"])
    if operation == "drop":
        typo = word[:position] + word[position + 1:]
    elif operation == "double":
        typo = word[:position] + word[position] + word[position:]
    elif operation == "swap":
        typo = word[:position] + word[position + 1] + word[position] + word[position + 2:]
    else:
        neighbours = {"a": "s", "e": "r", "i": "o", "o": "i", "n": "m", "r": "t", "t": "r", "s": "a", "l": "k", "m": "n", "c": "v", "u": "y", "h": "j", "d": "f", "p": "o", "y": "u", "g": "h", "b": "v", "v": "b", "k": "l"}
        typo = word[:position] + neighbours.get(word[position], "e") + word[position + 1:]
    if typo == word:
        typo = word[:position] + word[position + 1:]
    return form.replace(word, typo, 1)


def _forbidden_descriptions() -> list[str]:
    """ICD-10-CM descriptions of every gold code, as chart text must never contain them."""
    codes = set()
    for condition in CONDITIONS:
        codes.add(condition.code)
        codes.update(c for c in (condition.history, condition.family) if c and c != "self")
    texts = set()
    for code in codes:
        description = icd.get_description(code).lower()
        texts.add(description)
        texts.add(" ".join(re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", description).split()))
    return sorted(texts)


FORBIDDEN = _forbidden_descriptions()


def _fill(frame: str, wording: str, rng: random.Random, item: int) -> str:
    return frame.format(
        c=wording, C=wording[:1].upper() + wording[1:], i=item, n=rng.randint(2, 9), year=rng.randint(1995, 2023),
        age=rng.randint(24, 91), sex=rng.choice(["M", "F"]),
    )


def generate_chart(split: str, index: int) -> dict:
    """Chart `index` of a split: its text and its gold mentions and codes."""
    seed = SPLITS[split] + index
    rng = random.Random(seed)
    heldout = split == "heldout"
    count = rng.randint(3, 7)
    chosen: list[Condition] = []
    for condition in rng.sample(CONDITIONS, len(CONDITIONS)):
        if len(chosen) == count:
            break
        keys = {c.key for c in chosen} | {condition.key}
        if any(pair <= keys for pair in EXCLUSIVE):
            continue
        chosen.append(condition)
    parts: dict[str, list[str]] = {place: [] for place in ("hpi", "ap", "ros", "pmh", "fh")}
    mentions, wordings = [], []
    for condition in chosen:
        categories = [c for c in CATEGORIES if not (c == "history" and not condition.history) and not (c == "family" and not condition.family)]
        category = rng.choices(categories, weights=[CATEGORY_WEIGHTS[c] for c in categories])[0]
        forms = list(condition.forms) + (list(condition.heldout_forms) * 2 if heldout else [])
        wording = rng.choice(forms)
        if category == "misspelled":
            typo = None
            for candidate in rng.sample(forms, len(forms)):
                typo = misspell(candidate, rng)
                if typo:
                    wording = typo
                    break
            if typo is None:
                category = "positive"
        if category in ("positive", "misspelled"):
            expected, reason = condition.code, None
        elif category == "history":
            expected, reason = (condition.code if condition.history == "self" else condition.history), None
        elif category == "family":
            expected, reason = condition.family, None
        else:
            expected, reason = None, category
        mentions.append({
            "condition": condition.key, "condition_code": condition.code, "category": category,
            "wording": wording, "abbreviation": is_abbreviated(wording),
            "expected_code": expected, "expected_reason": reason,
        })
        wordings.append(wording)
    # Sometimes two mentions share a sentence, so a scope must end in the right place.
    pair_frames = dict(PAIR_FRAMES)
    if heldout:
        for pair, frames in HELDOUT_PAIR_FRAMES.items():
            pair_frames[pair] = pair_frames.get(pair, []) + frames * 2
    placed = set()
    if rng.random() < 0.5:
        for a in range(len(mentions)):
            for b in range(len(mentions)):
                pair = (mentions[a]["category"], mentions[b]["category"])
                if a != b and pair in pair_frames and not placed & {a, b}:
                    for _ in range(20):
                        frame = rng.choice(pair_frames[pair])
                        sentence = frame.format(a=wordings[a], b=wordings[b], A=wordings[a][:1].upper() + wordings[a][1:])
                        if not any(description in sentence.lower() for description in FORBIDDEN):
                            break
                    parts["hpi"].append(sentence)
                    placed |= {a, b}
    for position, mention in enumerate(mentions):
        if position in placed:
            continue
        category, wording = mention["category"], wordings[position]
        place = rng.choice(PLACES[category])
        frames = list(FRAMES[(category, place)])
        if heldout and (category, place) in HELDOUT_FRAMES:
            frames += HELDOUT_FRAMES[(category, place)] * 2
        item = len(parts["ap"]) + 1
        for _ in range(20):  # another frame when one would spell out a code description
            sentence = _fill(rng.choice(frames), wording, rng, item)
            if not any(description in sentence.lower() for description in FORBIDDEN):
                break
        parts[place].append(sentence)
    text = _assemble(parts, rng)
    lowered = text.lower()
    for description in FORBIDDEN:
        if description in lowered:
            raise AssertionError(f"chart {split}/{index} copies the ICD-10-CM description {description!r}")
    gold = sorted({m["expected_code"] for m in mentions if m["expected_code"]})
    return {"id": f"{split}-{index:05d}", "split": split, "seed": seed, "text": text, "gold_codes": gold, "mentions": mentions}


def _assemble(parts: dict[str, list[str]], rng: random.Random) -> str:
    hpi = parts["hpi"] + rng.sample(FILLER["hpi"], 1)
    rng.shuffle(hpi)
    lines = [f"CC: {'follow-up visit' if not parts['hpi'] else 'see HPI'}"]
    lines.append("HPI: " + " ".join(hpi))
    lines.append("PMH: " + (", ".join(parts["pmh"]) if parts["pmh"] else "none on file"))
    lines.append("Medications: " + ", ".join(rng.sample(FILLER["meds"], 2)))
    lines.append("Family History:")
    lines.append(" ".join(parts["fh"]) if parts["fh"] else "Noncontributory.")
    lines.append("Social History: " + rng.choice(FILLER["social"]))
    lines.append("ROS: " + " ".join(parts["ros"] + rng.sample(FILLER["ros"], 1)))
    lines.append("Physical Exam: " + " ".join(rng.sample(FILLER["exam"], 3)))
    lines.append("Assessment/Plan:")
    lines += parts["ap"] if parts["ap"] else ["1. Routine care."]
    lines.append(_fill(rng.choice(FILLER["plan"]), "", rng, 0))
    return "\n".join(lines) + "\n"


def generate(split: str, count: int) -> list[dict]:
    return [generate_chart(split, index) for index in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="heldout")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--out", help="JSON Lines file (default: stdout)")
    args = parser.parse_args(argv)
    charts = generate(args.split, args.count)
    out = open(args.out, "w") if args.out else sys.stdout
    for chart in charts:
        out.write(json.dumps(chart) + "\n")
    if args.out:
        out.close()
        print(f"{len(charts)} {args.split} charts → {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
