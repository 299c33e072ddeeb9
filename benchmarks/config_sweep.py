"""Hostile values in every environment variable of the settings class: refused / inert / misbehaved.

Run by hand::

    python benchmarks/config_sweep.py            # counts, and every misbehaved pair
    python benchmarks/config_sweep.py --json out.json

Every variable of ``DKISTProcessingCoreConfiguration`` gets every value of
``tests/helpers/hostile_config.py`` (huge, deeply nested, control characters, bytes that are not
UTF-8, wrong types, secrets in odd places), one at a time in this process; ``classify`` says how
each ended (see its docstring). ``tests/telemetry/test_config_hostile.py`` asserts the same table
has no misbehaved pair.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from helpers.hostile_config import HOSTILE_VALUES  # noqa: E402
from helpers.hostile_config import VARIABLES  # noqa: E402
from helpers.hostile_config import classify  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts: collections.Counter[str] = collections.Counter()
    misbehaved = []
    for variable in VARIABLES:
        for name, value in HOSTILE_VALUES.items():
            outcome = classify(variable, value)
            counts[outcome.kind] += 1
            if outcome.kind == "misbehaved":
                misbehaved.append({"variable": variable, "value": name, "detail": outcome.detail})
    result = {
        "variables": len(VARIABLES),
        "values": len(HOSTILE_VALUES),
        "pairs": sum(counts.values()),
        "refused": counts["refused"],
        "inert": counts["inert"],
        "misbehaved": counts["misbehaved"],
        "seconds": round(time.perf_counter() - started, 1),
        "misbehaved_pairs": misbehaved,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if not misbehaved else 1


if __name__ == "__main__":
    sys.exit(main())
