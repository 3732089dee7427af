"""Scores of `make mutate` per module, from mutmut's results in mutants/ (a markdown table for
docs/mutation.md). Timeouts count as killed (the mutant made the tests hang: they noticed);
mutants not checked yet are left out of the score and counted apart.

    python tests/mutation_score.py [--survivors]
"""

import json
import pathlib
import sys
from collections import Counter, defaultdict

# the protocol's decoder: what a peer's bytes meet first
DECODER = ("hq.protocol.x_decode_", "hq.protocol.x__finite_", "hq.protocol.x__no_constant_",
           "hq.protocol.x__has_lone_surrogate_")
KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout",
          152: "timeout", 255: "timeout", 37: "killed", -9: "killed", -11: "killed"}


def module_of(name):
    if name.startswith("hq.protocol."):
        return "hq.protocol (decoder)" if name.startswith(DECODER) else None
    return name.split(".x_")[0].split(".xǁ")[0]


def results(root="mutants"):
    found = {}
    for meta in pathlib.Path(root).rglob("*.meta"):
        found.update(json.loads(meta.read_text())["exit_code_by_key"])
    return found


def main(argv):
    by_module = defaultdict(Counter)
    survivors = []
    for name, code in sorted(results().items()):
        module = module_of(name)
        if module is None:
            continue
        if code is None:
            by_module[module]["not checked"] += 1
        elif code in KILLED:
            by_module[module][KILLED[code]] += 1
        elif code == 0:
            by_module[module]["survived"] += 1
            survivors.append(name)
        else:
            by_module[module]["no tests" if code in (5, 33) else "other"] += 1
    print("| module | mutants | killed | timeout | survived | no tests | not checked | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for module in sorted(by_module):
        c = by_module[module]
        if c["not checked"] == sum(c.values()):
            continue                # outside this run's MUTANTS
        checked = c["killed"] + c["timeout"] + c["survived"] + c["no tests"] + c["other"]
        score = f"{100 * (c['killed'] + c['timeout']) / checked:.1f} %" if checked else "-"
        print(f"| {module} | {sum(c.values())} | {c['killed']} | {c['timeout']} | "
              f"{c['survived']} | {c['no tests']} | {c['not checked']} | {score} |")
    if "--survivors" in argv:
        print()
        for name in survivors:
            print(name)


if __name__ == "__main__":
    main(sys.argv[1:])
