#!/usr/bin/env python3
"""Parses RFC 5424 syslog messages with an independent parser (syslog-rfc5424-parser from
PyPI, installed into the project venv by scripts/install-deps), for
crates/duress-receiver/tests/siem.rs. Reads a JSON list of messages (the frames' contents,
octet-counting already removed) on stdin; prints a JSON list of the parsed messages
(severity, facility, version, timestamp, hostname, appname, procid, msgid, sd, msg). A message
that does not parse exits non-zero naming it."""
import json
import sys

from syslog_rfc5424_parser import SyslogMessage

out = []
for m in json.load(sys.stdin):
    try:
        out.append(SyslogMessage.parse(m).as_dict())
    except Exception as e:  # noqa: BLE001 - the parser's own error, shown with the message
        raise SystemExit(f"not RFC 5424 ({e}): {m!r}")
print(json.dumps(out))
