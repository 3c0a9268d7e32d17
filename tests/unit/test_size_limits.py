"""Issue 13's limits: no product module over 700 lines, no class over 400 (the
test doubles live in sim/, another distribution, and are not measured)."""
import ast
from pathlib import Path

import pbs_globus_staging

LIB = Path(pbs_globus_staging.__file__).resolve().parent
MAX_MODULE, MAX_CLASS = 700, 400
# Being split in their own areas of issue 13 (agent: agent.py in phases; vocab:
# journal.py as a package).  Remove each name once its split has landed.
NOT_YET: set = set()


def sizes():
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(LIB)
        text = path.read_text()
        classes = [(node.name, node.end_lineno - node.lineno + 1)
                   for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ClassDef)]
        yield str(rel), len(text.splitlines()), classes


def test_no_module_or_class_over_the_limits():
    over = []
    for rel, lines, classes in sizes():
        if rel in NOT_YET:
            continue
        if lines > MAX_MODULE:
            over.append(f"{rel}: {lines} lines")
        over += [f"{rel}: class {name}: {n} lines" for name, n in classes if n > MAX_CLASS]
    assert over == []


def test_the_allow_list_names_only_modules_still_over():
    still = {rel for rel, lines, classes in sizes() if rel in NOT_YET and (
        lines > MAX_MODULE or any(n > MAX_CLASS for _, n in classes))}
    assert still == NOT_YET, f"split already: remove {sorted(NOT_YET - still)} from NOT_YET"
