"""Parses a /metrics body (stdin) with the Prometheus project's own Python parser and prints
every sample as JSON lines: {"name": ..., "labels": {...}, "value": ...}. Exits non-zero if the
text does not parse."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

body = sys.stdin.read()
for family in text_string_to_metric_families(body):
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": dict(s.labels), "value": s.value}))
