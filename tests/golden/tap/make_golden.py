"""Write (or check) the TAP 3.12 golden files from tap_golden_cases.py.

    .venv/bin/python tests/golden/tap/make_golden.py           # rewrite every <case>.ber
    .venv/bin/python tests/golden/tap/make_golden.py --check   # fail if any file would change

The bytes come from the production encoder (`encode_tap_file`, fast record encoder). They are
checked independently by test_tap_golden.py with the full reference ASN.1 modules.
"""

from __future__ import annotations

import argparse
import sys

from tap_golden_cases import CASES, HERE

from cdr_mediation.codecs.tap import encode_tap_file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args()
    expected = {case.path.name for case in CASES}
    stale = sorted(p.name for p in HERE.glob("*.ber") if p.name not in expected)
    differing = []
    for case in CASES:
        data = encode_tap_file(case.header, case.records)
        if case.path.exists() and case.path.read_bytes() == data:
            continue
        differing.append(case.path.name)
        if not args.check:
            case.path.write_bytes(data)
    for name in stale:
        print(f"stale golden file (no case): {name}")
    for name in differing:
        print(("differs: " if args.check else "wrote: ") + name)
    return 1 if args.check and (differing or stale) else 0


if __name__ == "__main__":
    sys.exit(main())
