"""The curated concept table: for the conditions a primary-care or hospital
chart mentions most, the ICD-10-CM code a coder assigns by default, the words
charts use for it beyond the tabular list's own (lay terms, common phrasings),
whether it persists (a chronic condition in the past history is still coded),
and its personal- and family-history codes where the derivation from the
tabular list's "Conditions classifiable to" notes does not reach it.

Every code here is checked against the installed ICD-10-CM code set at load:
a code that is not a billable code of that release stops the coder."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Concept:
    code: str
    synonyms: tuple[str, ...] = ()
    # A chronic condition named in the past history is current: code it.
    chronic: bool = False
    # The personal-history code for a resolved condition (None: derive it from
    # the tabular list, or drop a resolved mention that has none).
    history: str | None = None
    # The family-history code (None: derive it from the tabular list).
    family: str | None = None
    notes: str = field(default="", compare=False)


CONCEPTS: tuple[Concept, ...] = (
    # Circulatory
    Concept("I10", ("hypertension", "high blood pressure", "hypertensive disease", "elevated blood pressure disorder"), chronic=True, family="Z82.49"),
    Concept("I50.9", ("heart failure", "congestive heart failure", "heart failure with reduced ejection fraction", "weak heart", "pump failure", "cardiomyopathy with failure"), chronic=True, family="Z82.49"),
    Concept("I21.9", ("myocardial infarction", "heart attack", "acute myocardial infarction", "acute coronary infarction"), history="I25.2", family="Z82.49"),
    Concept("I25.10", ("coronary artery disease", "coronary disease", "coronary atherosclerosis", "blocked coronary arteries", "coronary heart disease", "ischemic heart disease"), chronic=True, family="Z82.49"),
    Concept("I48.91", ("atrial fibrillation", "irregularly irregular rhythm"), chronic=True, family="Z82.49"),
    Concept("I63.9", ("stroke", "cerebral infarction", "ischemic stroke", "brain attack", "cerebrovascular accident"), history="Z86.73", family="Z82.3"),
    Concept("G45.9", ("transient ischemic attack", "mini stroke", "mini-stroke"), history="Z86.73"),
    Concept("I26.99", ("pulmonary embolism", "pulmonary embolus", "thrombosis in the lung", "blood clot in the lung", "blood clots in the lungs", "lung thrombosis", "pulmonary thromboembolism"), history="Z86.711", family="Z82.49"),
    Concept("I82.409", ("deep vein thrombosis", "deep venous thrombosis", "leg thrombosis", "thrombosis in the leg", "blood clot in the leg", "blood clots in the legs", "thrombosis of the leg veins"), history="Z86.718", family="Z82.49"),
    Concept("I73.9", ("peripheral vascular disease", "peripheral arterial disease", "peripheral artery disease", "claudication", "poor circulation in the legs"), chronic=True, family="Z82.49"),
    Concept("I95.9", ("hypotension", "low blood pressure"), family="Z82.49"),
    # Endocrine, metabolic
    Concept("E11.9", ("type 2 diabetes mellitus", "type 2 diabetes", "type ii diabetes", "diabetes type 2", "diabetes type ii", "adult onset diabetes", "non insulin dependent diabetes", "diabetes mellitus", "diabetes", "sugar diabetes", "diabetic"), chronic=True, family="Z83.3"),
    Concept("E10.9", ("type 1 diabetes mellitus", "type 1 diabetes", "type i diabetes", "diabetes type 1", "diabetes type i", "juvenile diabetes", "insulin dependent diabetes", "juvenile onset diabetes"), chronic=True, family="Z83.3"),
    Concept("E78.5", ("hyperlipidemia", "dyslipidemia", "high cholesterol", "elevated cholesterol", "high lipids", "elevated lipids", "lipid disorder"), chronic=True, family="Z83.49"),
    Concept("E66.9", ("obesity", "obese", "morbidly overweight"), chronic=True, family="Z83.49"),
    Concept("E03.9", ("hypothyroidism", "underactive thyroid", "low thyroid", "thyroid underactivity"), chronic=True, family="Z83.49"),
    Concept("E05.90", ("hyperthyroidism", "overactive thyroid", "thyrotoxicosis"), chronic=True, family="Z83.49"),
    Concept("E87.1", ("hyponatremia", "hyponatremic", "low sodium", "low serum sodium", "sodium deficiency")),
    Concept("E87.6", ("hypokalemia", "hypokalemic", "low potassium", "low serum potassium", "potassium deficiency")),
    # Respiratory
    Concept("J44.9", ("chronic obstructive pulmonary disease", "chronic obstructive lung disease", "chronic obstructive airway disease", "chronic airflow obstruction"), chronic=True, family="Z82.5"),
    Concept("J45.909", ("asthma", "reactive airway disease", "asthmatic", "bronchial asthma"), chronic=True, family="Z82.5"),
    Concept("J18.9", ("pneumonia", "lung infection", "chest infection", "community acquired pneumonia", "infiltrate consistent with infection"), history="Z87.01", family="Z83.6"),
    Concept("J06.9", ("upper respiratory infection", "upper respiratory tract infection", "head cold", "upper airway infection")),
    Concept("J02.9", ("pharyngitis", "sore throat", "throat infection")),
    Concept("J01.90", ("acute sinusitis", "sinus infection", "sinusitis")),
    Concept("G47.33", ("obstructive sleep apnea", "obstructive apnea"), chronic=True),
    Concept("R06.02", ("shortness of breath", "short of breath", "breathlessness", "breathless", "winded", "difficulty breathing", "trouble breathing")),
    Concept("R06.2", ("wheezing", "wheeze", "wheezes", "wheezy")),
    Concept("R05.9", ("cough", "coughing")),
    # Digestive
    Concept("K21.9", ("gastro-esophageal reflux disease", "gastroesophageal reflux", "acid reflux", "reflux disease", "gerd disease"), chronic=True),
    Concept("K57.30", ("diverticulosis", "diverticular disease", "diverticula of the colon"), chronic=True),
    Concept("K80.20", ("gallstones", "gallstone", "cholelithiasis", "stones in the gallbladder", "gallbladder stones"), family="Z83.79"),
    Concept("K92.2", ("gastrointestinal hemorrhage", "gastrointestinal bleeding", "gastrointestinal bleed", "bleeding from the gut", "gut bleed")),
    Concept("K74.60", ("cirrhosis", "liver cirrhosis", "cirrhosis of the liver", "cirrhotic liver"), chronic=True, family="Z83.79"),
    Concept("R11.2", ("nausea with vomiting", "nausea and vomiting", "vomiting and nausea")),
    Concept("R10.9", ("abdominal pain", "belly pain", "stomach ache", "stomachache", "tummy ache", "stomach pain", "abdominal discomfort")),
    # Genitourinary
    Concept("N18.9", ("chronic kidney disease", "chronic kidney insufficiency", "chronic kidney failure", "chronic renal disease"), chronic=True, family="Z84.19"),
    Concept("N17.9", ("acute kidney injury", "acute kidney failure", "acute renal failure", "acute renal injury")),
    Concept("N39.0", ("urinary tract infection", "urine infection", "urinary infection"), history="Z87.440"),
    Concept("N40.0", ("benign prostatic hyperplasia", "enlarged prostate", "prostatic hypertrophy", "benign prostatic hypertrophy", "prostate enlargement"), chronic=True),
    # Neoplasms
    Concept("C50.919", ("breast cancer", "cancer of the breast", "breast carcinoma"), history="Z85.3", family="Z80.3"),
    Concept("C61", ("prostate cancer", "cancer of the prostate", "prostatic carcinoma"), history="Z85.46", family="Z80.42"),
    Concept("C34.90", ("lung cancer", "cancer of the lung", "bronchogenic carcinoma", "pulmonary carcinoma"), history="Z85.118", family="Z80.1"),
    Concept("C18.9", ("colon cancer", "cancer of the colon", "colonic carcinoma", "bowel cancer", "cancer of the bowel"), history="Z85.038", family="Z80.0"),
    Concept("C56.9", ("ovarian cancer", "cancer of the ovary", "ovary cancer"), history="Z85.43", family="Z80.41"),
    # Blood
    Concept("D64.9", ("anemia", "low blood count", "low hemoglobin", "low red cell count"), chronic=True, family="Z83.2"),
    # Mental and behavioural
    Concept("F32.A", ("depression", "depressive disorder", "depressed", "clinical depression"), chronic=True, family="Z81.8"),
    Concept("F41.9", ("anxiety", "anxiety disorder", "anxious disorder"), chronic=True, family="Z81.8"),
    Concept("F10.20", ("alcohol dependence", "alcoholism", "alcohol use disorder", "alcohol addiction", "alcoholic"), chronic=True, family="Z81.1"),
    Concept("F03.90", ("dementia", "senile dementia", "memory loss disorder", "neurocognitive disorder"), chronic=True, family="Z81.8"),
    # Nervous system
    Concept("G43.909", ("migraine", "migraines", "migraine headache", "migraine headaches"), chronic=True, family="Z82.0"),
    Concept("G40.909", ("epilepsy", "seizure disorder", "seizures disorder", "epileptic"), chronic=True, family="Z82.0"),
    Concept("R51.9", ("headache", "head pain", "head ache", "cephalgia")),
    Concept("R42", ("dizziness", "dizzy", "lightheadedness", "light headedness", "lightheaded", "light headed", "giddiness", "vertigo")),
    # Musculoskeletal
    Concept("M54.50", ("low back pain", "lower back pain", "lumbago", "lumbar back pain", "lumbar pain"), family="Z82.69"),
    Concept("M19.90", ("osteoarthritis", "degenerative joint disease", "degenerative arthritis", "wear and tear arthritis", "arthritis"), chronic=True, family="Z82.61"),
    Concept("M81.0", ("osteoporosis", "thinning of the bones", "brittle bones", "bone thinning"), chronic=True, family="Z82.62"),
    # Infections, skin, ear
    Concept("A41.9", ("sepsis", "septicemia", "septic", "blood infection")),
    Concept("L03.90", ("cellulitis",)),
    Concept("H66.90", ("otitis media", "ear infection", "middle ear infection")),
    # Symptoms
    Concept("R07.9", ("chest pain", "pain in the chest", "chest pains")),
    Concept("R50.9", ("fever", "febrile", "fevers", "pyrexia", "temperature elevation", "high temperature")),
    Concept("R53.83", ("fatigue", "tiredness", "tired", "lack of energy", "exhaustion", "low energy")),
)
