"""Chart abbreviations and the words they stand for.

Expansions are matched like any chart words, so an abbreviation codes through
the same concept index as its spelled-out form. Abbreviations that are also
ordinary words or other abbreviations in lower case ("MI", "PE", "CA", "AF")
count only when written in capitals."""

# Case-insensitive: unambiguous in a chart whatever the case.
ABBREVIATIONS = {
    "htn": "hypertension",
    "dm": "diabetes mellitus",
    "dm1": "type 1 diabetes mellitus",
    "dm2": "type 2 diabetes mellitus",
    "t1dm": "type 1 diabetes mellitus",
    "t2dm": "type 2 diabetes mellitus",
    "iddm": "type 1 diabetes mellitus",
    "niddm": "type 2 diabetes mellitus",
    "chf": "congestive heart failure",
    "hf": "heart failure",
    "hfref": "heart failure",
    "copd": "chronic obstructive pulmonary disease",
    "sob": "shortness of breath",
    "doe": "dyspnea on exertion",
    "cad": "coronary artery disease",
    "ascvd": "coronary artery disease",
    "afib": "atrial fibrillation",
    "a-fib": "atrial fibrillation",
    "hld": "hyperlipidemia",
    "gerd": "gastro-esophageal reflux disease",
    "ckd": "chronic kidney disease",
    "aki": "acute kidney injury",
    "arf": "acute kidney failure",
    "uti": "urinary tract infection",
    "uri": "upper respiratory infection",
    "cva": "stroke",
    "tia": "transient ischemic attack",
    "dvt": "deep vein thrombosis",
    "pna": "pneumonia",
    "osa": "obstructive sleep apnea",
    "bph": "benign prostatic hyperplasia",
    "lbp": "low back pain",
    "djd": "osteoarthritis",
    "pvd": "peripheral vascular disease",
    "pad": "peripheral vascular disease",
    "gib": "gastrointestinal hemorrhage",
    "ugib": "gastrointestinal hemorrhage",
    "lgib": "gastrointestinal hemorrhage",
    "n/v": "nausea with vomiting",
    "abd": "abdominal",
    "etoh": "alcohol",
    "aud": "alcohol use disorder",
    "mdd": "major depressive disorder",
    "gad": "generalized anxiety disorder",
    "gi": "gastrointestinal",
    "lle": "left lower extremity",
    "rle": "right lower extremity",
    "hx": "history",
    "fhx": "family history",
    "sz": "seizure",
    "ha": "headache",
}

# Words that chart writers use for a tabular-list word: folded onto it before
# matching, in chart text and in index terms alike.
WORD_SYNONYMS = {
    "cancer": "malignant neoplasm",
    "carcinoma": "malignant neoplasm",
    "malignancy": "malignant neoplasm",
    "adenocarcinoma": "malignant neoplasm",
    "hypothyroid": "hypothyroidism",
    "hyperthyroid": "hyperthyroidism",
    "thrombus": "thrombosis",
    "clot": "thrombosis",
    "renal": "kidney",
    "cardiac": "heart",
}

# Case-sensitive: only in capitals.
UPPERCASE_ABBREVIATIONS = {
    "MI": "myocardial infarction",
    "AMI": "acute myocardial infarction",
    "PE": "pulmonary embolism",
    "CA": "malignant neoplasm",
    "AF": "atrial fibrillation",
    "CP": "chest pain",
    "OA": "osteoarthritis",
    "HA": "headache",
    "OM": "otitis media",
    "FUO": "fever of unknown origin",
}


def expansion_of(token_text: str) -> str | None:
    """The words an abbreviation token stands for, or None when it is none."""
    if token_text in UPPERCASE_ABBREVIATIONS:
        return UPPERCASE_ABBREVIATIONS[token_text]
    lowered = token_text.lower()
    if lowered in ABBREVIATIONS and (lowered not in {"ca", "ha"} or token_text.isupper()):
        return ABBREVIATIONS[lowered]
    return None


def word_synonym_of(word: str) -> str | None:
    """The tabular-list word(s) a chart word stands for, or None."""
    return WORD_SYNONYMS.get(word.lower())
