#!/usr/bin/env python3
"""Parses a Prometheus text exposition with the reference parser.

stdin: {"text": "<the /metrics body>"}
stdout: {"families": {name: type}, "samples": [[name, {label: value}, value], ...]}
Exits non-zero (with the parser's error) when the text does not parse.
Uses prometheus_client.parser.text_string_to_metric_families
(pip install -r tests/ecosystem/requirements.txt).
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    doc = json.load(sys.stdin)
    families = {}
    samples = []
    for fam in text_string_to_metric_families(doc["text"]):
        families[fam.name] = fam.type
        for s in fam.samples:
            samples.append([s.name, dict(s.labels), s.value])
    json.dump({"families": families, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
