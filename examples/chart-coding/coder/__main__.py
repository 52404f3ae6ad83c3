"""Codes a chart file (or standard input) and prints the coding as JSON:

    python3 -m coder chart.txt
"""
import json
import sys

from . import code_chart


def main() -> int:
    text = open(sys.argv[1], encoding="utf-8").read() if len(sys.argv) > 1 and sys.argv[1] != "-" else sys.stdin.read()
    json.dump(code_chart(text), sys.stdout, indent=2)
    print()
    return 0


sys.exit(main())
