"""The chart coder's context rules on hand-written charts: negation,
uncertainty, history, family history, Excludes1, abbreviations, section
headers, spelling, the tabular-list index, offsets, and the Lambda handler."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coder import ChartCoder  # noqa: E402
from coder.lexicon import default_index  # noqa: E402
import handler  # noqa: E402

CODER = ChartCoder(default_index())


def coded(text):
    return {c["code"]: c for c in CODER.code(text)["codes"]}


def dropped(text):
    return {(d["code"], d["reason"]): d for d in CODER.code(text)["dropped"]}


class NegationTest(unittest.TestCase):
    def test_denied_symptom_is_dropped_as_negated(self):
        text = "HPI: Denies chest pain."
        self.assertNotIn("R07.9", coded(text))
        self.assertIn(("R07.9", "negated"), dropped(text))
        self.assertIn('"denies"', dropped(text)[("R07.9", "negated")]["why"])

    def test_no_evidence_of(self):
        text = "Imaging: No evidence of pneumonia on chest x-ray."
        self.assertNotIn("J18.9", coded(text))
        self.assertIn(("J18.9", "negated"), dropped(text))

    def test_negation_covers_a_list(self):
        text = "ROS: Denies fever, cough, nausea and vomiting or abdominal pain."
        self.assertEqual(coded(text), {})
        for code in ("R50.9", "R05.9", "R11.2", "R10.9"):
            self.assertIn((code, "negated"), dropped(text))

    def test_but_ends_the_scope(self):
        text = "HPI: No fever but has a productive cough."
        self.assertIn(("R50.9", "negated"), dropped(text))
        self.assertIn("R05.9", coded(text))

    def test_however_ends_the_scope(self):
        text = "No chest pain, however reports shortness of breath."
        self.assertIn(("R07.9", "negated"), dropped(text))
        self.assertIn("R06.02", coded(text))

    def test_sentence_end_ends_the_scope(self):
        text = "Denies chest pain. Pneumonia on the left."
        self.assertIn("J18.9", coded(text))

    def test_post_negation(self):
        self.assertIn(("I26.99", "negated"), dropped("Pulmonary embolism was ruled out by CT."))

    def test_pseudo_negation_does_not_negate(self):
        self.assertIn("I50.9", coded("No change in her heart failure symptoms since last visit."))


class UncertaintyTest(unittest.TestCase):
    def test_rule_out(self):
        self.assertIn(("J18.9", "uncertain"), dropped("A/P: Rule out pneumonia."))
        self.assertIn(("J18.9", "uncertain"), dropped("A/P: r/o PNA"))

    def test_possible(self):
        text = "Possible UTI, will send urine culture."
        self.assertNotIn("N39.0", coded(text))
        self.assertIn(("N39.0", "uncertain"), dropped(text))

    def test_cannot_exclude_is_uncertain_not_negated(self):
        self.assertIn(("I26.99", "uncertain"), dropped("Pulmonary embolism cannot be excluded."))
        self.assertIn(("I26.99", "uncertain"), dropped("Cannot exclude pulmonary embolism."))
        self.assertIn(("I26.99", "uncertain"), dropped("PE has not been ruled out."))

    def test_certain_diagnosis_after_uncertain_clause(self):
        text = "Possible pneumonia; confirmed urinary tract infection."
        self.assertIn("N39.0", coded(text))


class HistoryTest(unittest.TestCase):
    def test_history_of_mi_is_old_mi_not_acute(self):
        codes = coded("HPI: 64 yo man with history of MI in 2015.")
        self.assertIn("I25.2", codes)
        self.assertNotIn("I21.9", codes)
        self.assertEqual(codes["I25.2"]["context"], "history")
        self.assertEqual(codes["I25.2"]["condition_code"], "I21.9")

    def test_personal_history_codes(self):
        self.assertIn("Z86.718", coded("h/o DVT, off anticoagulation."))
        self.assertIn("Z85.3", coded("Hx of breast cancer s/p lumpectomy."))
        self.assertIn("Z86.73", coded("Prior stroke without residual deficits."))

    def test_personal_history_derived_from_the_tabular_list(self):
        # Melanoma is not in the curated table: Z85.820 comes from its
        # "Conditions classifiable to C43" note.
        codes = coded("History of melanoma of skin, excised 2010.")
        self.assertIn("Z85.820", codes)

    def test_chronic_condition_in_past_history_is_coded(self):
        codes = coded("PMH: HTN, DM2, prior DVT")
        self.assertIn("I10", codes)
        self.assertIn("E11.9", codes)
        self.assertIn("Z86.718", codes)
        self.assertNotIn("I82.409", codes)

    def test_resolved_symptom_is_dropped(self):
        self.assertIn(("R07.9", "historical"), dropped("History of chest pain years ago."))


class FamilyHistoryTest(unittest.TestCase):
    def test_mother_had_breast_cancer(self):
        codes = coded("Mother had breast cancer.")
        self.assertIn("Z80.3", codes)
        self.assertNotIn("C50.919", codes)
        self.assertEqual(codes["Z80.3"]["context"], "family")

    def test_family_history_section(self):
        codes = coded("Family History:\nFather - CAD, DM2.\nSister with asthma.")
        self.assertEqual(set(codes), {"Z82.49", "Z83.3", "Z82.5"})
        self.assertTrue(all(c["section"] == "family history" for c in codes.values()))

    def test_relative_after_the_condition(self):
        self.assertIn("Z80.42", coded("Prostate cancer in his father."))

    def test_patient_subject_ends_family_scope(self):
        codes = coded("Mother had diabetes; patient has hypertension.")
        self.assertIn("Z83.3", codes)
        self.assertIn("I10", codes)

    def test_negated_family_history_codes_nothing(self):
        text = "No family history of colon cancer."
        self.assertEqual(coded(text), {})
        self.assertIn(("C18.9", "negated"), dropped(text))


class Excludes1Test(unittest.TestCase):
    def test_type_1_and_type_2_diabetes_keep_the_better_supported(self):
        text = "HPI: Pt with DM2.\nAssessment/Plan:\n1. Type 1 diabetes, on insulin pump.\n2. Type 1 diabetes education."
        result = CODER.code(text)
        codes = {c["code"] for c in result["codes"]}
        self.assertIn("E10.9", codes)
        self.assertNotIn("E11.9", codes)
        why = {(d["code"], d["reason"]): d["why"] for d in result["dropped"]}
        self.assertIn(("E11.9", "excludes1"), why)
        self.assertIn("Excludes1", why[("E11.9", "excludes1")])
        self.assertIn("E10.9 kept", why[("E11.9", "excludes1")])

    def test_asthma_excludes_wheezing_nos(self):
        text = "A/P: Asthma, wheezy on exam. Continue asthma inhalers."
        self.assertIn("J45.909", coded(text))
        self.assertNotIn("R06.2", coded(text))
        self.assertIn(("R06.2", "excludes1"), dropped(text))

    def test_codes_without_a_note_are_both_kept(self):
        self.assertEqual(set(coded("A/P: HTN. DM2.")), {"I10", "E11.9"})


class AbbreviationTest(unittest.TestCase):
    def test_common_chart_abbreviations(self):
        codes = coded("PMH: HTN, DM2, CHF, COPD, CKD, GERD, OSA, BPH, HLD")
        self.assertEqual(set(codes), {"I10", "E11.9", "I50.9", "J44.9", "N18.9", "K21.9", "G47.33", "N40.0", "E78.5"})

    def test_symptom_abbreviations(self):
        codes = coded("HPI: c/o CP and SOB, n/v since this morning.")
        self.assertEqual(set(codes), {"R07.9", "R06.02", "R11.2"})

    def test_ambiguous_abbreviation_counts_only_in_capitals(self):
        self.assertIn("I21.9", coded("A/P: acute MI, cath lab activated."))
        self.assertNotIn("I21.9", coded("Walked 2 mi today."))

    def test_abbreviation_confidence_is_lower_than_the_spelled_out_term(self):
        self.assertLess(coded("HPI: HTN.")["I10"]["confidence"], coded("HPI: hypertension.")["I10"]["confidence"])


class SectionTest(unittest.TestCase):
    CHART = (
        "55 yo woman.\n"
        "CC: cough\n"
        "HPI: Three days of fever.\n"
        "PMH: asthma\n"
        "ROS: negative for chest pain\n"
        "ASSESSMENT AND PLAN\n"
        "1. Pneumonia - start antibiotics\n"
    )

    def test_each_code_names_its_section(self):
        codes = coded(self.CHART)
        self.assertEqual(codes["R05.9"]["section"], "chief complaint")
        self.assertEqual(codes["R50.9"]["section"], "history of present illness")
        self.assertEqual(codes["J45.909"]["section"], "past medical history")
        self.assertEqual(codes["J18.9"]["section"], "assessment and plan")
        self.assertEqual(dropped(self.CHART)[("R07.9", "negated")]["section"], "review of systems")

    def test_assessment_raises_confidence(self):
        self.assertGreater(coded("A/P: pneumonia")["J18.9"]["confidence"], coded("HPI: pneumonia")["J18.9"]["confidence"])

    def test_header_word_inside_a_sentence_is_not_a_header(self):
        codes = coded("HPI: PE was found on CT angiogram.")
        self.assertEqual(codes["I26.99"]["section"], "history of present illness")


class MatchingTest(unittest.TestCase):
    def test_misspelling_is_corrected(self):
        codes = coded("A/P: pnuemonia, start antibiotics.")
        self.assertIn("J18.9", codes)
        self.assertEqual(codes["J18.9"]["evidence"], "pnuemonia")

    def test_word_order_and_lay_terms(self):
        self.assertIn("C50.919", coded("A/P: carcinoma of the breast, stage II."))
        self.assertIn("I10", coded("HPI: long-standing high blood pressure."))

    def test_tabular_list_terms_beyond_the_curated_table(self):
        self.assertIn("M10.9", coded("A/P: gout, flare resolved with colchicine."))
        self.assertIn("I10", coded("Essential hypertension."))

    def test_more_specific_tabular_term_wins(self):
        self.assertIn("E11.65", coded("A/P: type 2 diabetes mellitus with hyperglycemia."))
        self.assertEqual(set(coded("A/P: Asthma exacerbation.")), {"J45.901"})

    def test_default_code_gives_way_to_a_more_specific_one(self):
        text = "HPI: CKD stage 3a.\nAssessment/Plan:\n1. Chronic kidney disease."
        self.assertEqual(set(coded(text)), {"N18.31"})
        why = dropped("PMH: CKD stage 3. A/P: CKD, stable.")[("N18.9", "less specific")]["why"]
        self.assertIn("N18.30", why)

    def test_age_is_not_a_history_trigger(self):
        codes = coded("78 year old woman with pneumonia.")
        self.assertEqual(codes["J18.9"]["context"], "current")

    def test_filler_text_codes_nothing(self):
        text = "Physical Exam: Heart regular rate and rhythm. Lungs clear. Alert and oriented x3. Follow up in 2 weeks."
        self.assertEqual(coded(text), {})


class OffsetTest(unittest.TestCase):
    CHART = (
        "CC: chest pain\n"
        "HPI: 70 yo F with h/o MI, HTN and DM2 presents with CP and SOB. Denies fever. Possible pnuemonia.\n"
        "PMH: CHF, prior DVT\n"
        "Family History:\nMother had breast cancer. Father with stroke.\n"
        "Assessment/Plan:\n1. Chest pain.\n2. Type 1 diabetes.\n"
    )

    def test_every_span_is_its_evidence(self):
        result = CODER.code(self.CHART)
        self.assertTrue(result["codes"] and result["dropped"])
        for item in result["codes"] + result["dropped"]:
            self.assertEqual(self.CHART[item["start"]:item["end"]], item["evidence"], item)
        for code in result["codes"]:
            for mention in code["mentions"]:
                self.assertEqual(self.CHART[mention["start"]:mention["end"]], mention["evidence"])
            self.assertGreaterEqual(code["confidence"], 0.0)
            self.assertLessEqual(code["confidence"], 1.0)

    def test_output_is_json(self):
        import json
        json.dumps(CODER.code(self.CHART))


class HandlerTest(unittest.TestCase):
    def test_chart_event(self):
        result = handler.handler({"bucket": "charts", "key": "a.txt", "body": "A/P: HTN. Denies chest pain."}, None)
        self.assertEqual((result["bucket"], result["key"]), ("charts", "a.txt"))
        self.assertEqual([c["code"] for c in result["codes"]], ["I10"])
        self.assertEqual([d["reason"] for d in result["dropped"]], ["negated"])

    def test_job_item_event(self):
        event = {"job": "code-charts", "run": "r1", "item": "in/a.txt", "attempt": 1,
                 "payload": {"bucket": "charts", "key": "in/a.txt", "body": "Mother had breast cancer."}}
        result = handler.handler(event, None)
        self.assertEqual(result["item"], "in/a.txt")
        self.assertEqual([c["code"] for c in result["codes"]], ["Z80.3"])

    def test_bucket_item_without_body_reads_through_mayfly_get(self):
        event = {"job": "code-charts", "item": "in/a.txt", "payload": {"bucket": "charts", "key": "in/a.txt", "size": 10}}
        saved = os.environ.get("MAYFLY_BIN")
        os.environ["MAYFLY_BIN"] = "/nonexistent/mayfly"
        try:
            with self.assertRaises(handler.ChartEventError) as raised:
                handler.handler(event, None)
            self.assertIn("charts/in/a.txt", str(raised.exception))
        finally:
            if saved is None:
                del os.environ["MAYFLY_BIN"]
            else:
                os.environ["MAYFLY_BIN"] = saved

    def test_s3_notification_item_reads_the_object_it_names(self):
        # What a route puts on a queue, as a queue source's job item: the key URL-encoded as S3 writes it.
        record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "charts"}, "object": {"key": "in/chart+001%23.txt", "size": 10}}}
        event = {"job": "code-charts", "item": "17", "payload": {"Records": [record]}}
        saved = os.environ.get("MAYFLY_BIN")
        os.environ["MAYFLY_BIN"] = "/nonexistent/mayfly"
        try:
            with self.assertRaises(handler.ChartEventError) as raised:
                handler.handler(event, None)
            self.assertIn("charts/in/chart 001#.txt", str(raised.exception))
        finally:
            if saved is None:
                del os.environ["MAYFLY_BIN"]
            else:
                os.environ["MAYFLY_BIN"] = saved

    def test_s3_notification_of_several_objects_is_refused(self):
        record = {"s3": {"bucket": {"name": "charts"}, "object": {"key": "a.txt"}}}
        with self.assertRaises(handler.ChartEventError) as raised:
            handler.handler({"payload": {"Records": [record, record]}}, None)
        self.assertIn("2 records", str(raised.exception))
        with self.assertRaises(handler.ChartEventError) as raised:
            handler.handler({"payload": {"Records": [{"s3": {}}]}}, None)
        self.assertIn("s3.bucket.name", str(raised.exception))

    def test_event_without_a_chart(self):
        with self.assertRaises(handler.ChartEventError):
            handler.handler({"bucket": "charts"}, None)


if __name__ == "__main__":
    unittest.main()
