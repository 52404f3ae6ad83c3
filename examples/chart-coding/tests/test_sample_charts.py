"""Hand-written charts in the styles coders see (an ED note, a clinic
follow-up, a discharge summary) next to their expected coding
(`tests/charts/NAME.txt` → `NAME.expected.json`). Where today's coding is
wrong the expected file says so under "fixme" and asserts the current output."""
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from coder import code_chart  # noqa: E402

CHARTS = os.path.join(HERE, "charts")


class SampleChartTest(unittest.TestCase):
    def test_each_sample_chart_codes_as_expected(self):
        names = sorted(n[:-4] for n in os.listdir(CHARTS) if n.endswith(".txt"))
        self.assertEqual(len(names), 3)
        for name in names:
            with self.subTest(chart=name):
                with open(os.path.join(CHARTS, name + ".txt"), encoding="utf-8") as f:
                    text = f.read()
                with open(os.path.join(CHARTS, name + ".expected.json"), encoding="utf-8") as f:
                    expected = json.load(f)
                result = code_chart(text)
                self.assertEqual(sorted(c["code"] for c in result["codes"]), expected["codes"])
                self.assertEqual(sorted([d["code"], d["reason"]] for d in result["dropped"]), expected["dropped"])
                for item in result["codes"] + result["dropped"]:
                    self.assertEqual(text[item["start"]:item["end"]], item["evidence"])


if __name__ == "__main__":
    unittest.main()
