#!/usr/bin/env python3
"""Parses a /metrics answer (stdin) with the Prometheus project's own Python parsers
(prometheus-client from PyPI, installed into the project venv by scripts/install-deps), so the
receiver's exposition is checked by code that is not ours. Argument: `prometheus` (the
Prometheus text format 0.0.4, `prometheus_client.parser`) or `openmetrics` (the strict
OpenMetrics 1.0 parser, which also checks `# EOF`, unit suffixes and counter `_total`
suffixes). Prints FAMILIES as JSON:
{name: {"type": ..., "unit": ..., "samples": [{"name", "labels", "value"}]}}.
A parse error exits non-zero with the parser's message."""
import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as prometheus_families


def families(parse, text):
    out = {}
    for family in parse(text):
        if family.name in out:
            raise SystemExit(f"family {family.name} twice")
        out[family.name] = {
            "type": family.type,
            "unit": family.unit,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
            ],
        }
    return out


PARSERS = {"prometheus": prometheus_families, "openmetrics": openmetrics_families}
if len(sys.argv) != 2 or sys.argv[1] not in PARSERS:
    raise SystemExit("usage: parse_exposition.py prometheus|openmetrics < metrics.txt")
print(json.dumps(families(PARSERS[sys.argv[1]], sys.stdin.read())))
