"""No state word is spelled outside the vocabulary modules (states.py, events.py).

Scanned: every module of ``lib/pbs_globus_staging`` except states.py and
events.py themselves (the test doubles are not in it: they are the separate
``sim/`` package).  The PBS hook scripts under ``data/hooks`` are scanned too.

The words: every value of ``states.Stage``, ``JobMark``, ``Request``,
``Transfer``, ``Item``, ``Direction``, ``GlobusStatus``, ``Outcome``, ``DeliveryStatus`` and of
``events.Kind`` and ``events.History``.

Some of those words are also ordinary strings ("in", "out", "new", "active",
"seen", "done", "ACTIVE", "FAILED" -- FAILED is also a Globus fatal-error
code).  So the rule has two halves:

1. **Distinctive words** -- those containing ``-`` or ``_`` (``staged-in``,
   ``user-action``, ``waiting-exit``, ``stagein_failed``, ``waiting_for_user``,
   ...): a string literal equal to one is flagged wherever it is.
2. **Plain words** -- every other word is flagged only where it is used as a
   state, that is, a string literal equal to it that is
   a. compared (``==``, ``!=``, ``in``, ``not in``) with a *state expression*,
      directly or as an element of a tuple/list/set compared with one.  A
      state expression is a name or attribute called ``state``, ``status``,
      ``outcome``, ``direction``, ``stage_state``, ``kind``, ``new`` or
      ``old``, or ``x.get("status")`` / ``x["status"]`` with such a key;
   b. the value (or an element of the tuple/list/set value) of a keyword
      argument with one of those names (``status="canceled"``);
   c. assigned to one of those names or attributes;
   d. a positional argument of a call that takes a state word there:
      ``set_request_state(id, W)``, ``set_item_outcome(id, W)``,
      ``set_transfer_outcome(id, W)``, ``add_event(job, W)``, ``_alert(W)``;
   e. an element of a tuple/list/set, or a key or value of a dict, of at
      least two string literals that are *all* words of one vocabulary (a
      vocabulary spelled again, e.g. ``("in", "out")`` or
      ``{"done": "succeeded", ...}``);
   f. a direction word used as a lookup key: ``x.get("in")``, ``x["out"]``;
   g. quoted inside SQL text: a literal containing ``'word'`` together with
      an SQL keyword (SELECT, UPDATE, INSERT, DELETE, WHERE, CHECK);
   h. a member value of an ``Enum`` class (a vocabulary defined again).
   The value of a dict entry whose key is ``"status"``, ``"state"``... counts
   as rule b.

Docstrings are not scanned.  Messages (``f"stage-in {what} failed"``) are
not flagged: a word inside a longer literal is English, not a state.  The rule
is a net, not a proof: a plain word in a context it does not know (a loop
variable not named after its field, say) passes; the distinctive words never do.

Files owned by other engineers have a TEMPORARY allowance (``ALLOWED``,
exact counts per word): the test fails when such a file gains a literal, and
the allowance goes away as they replace theirs.  The runjob hook's fallback
guard keeps its one word on purpose (``PERMANENT``): it must hold when the
package cannot even be imported.
"""
from __future__ import annotations

import ast
import collections
import re
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from pbs_globus_staging import events, states

PKG = Path(__file__).resolve().parents[2] / "lib" / "pbs_globus_staging"
VOCABULARIES = (states.Stage, states.JobMark, states.Request, states.Transfer, states.Item,
                states.Direction, states.GlobusStatus, states.Outcome, states.DeliveryStatus,
                events.Kind, events.History)
WORDS = {m.value for v in VOCABULARIES for m in v}
DISTINCTIVE = {w for w in WORDS if "-" in w or "_" in w}
PLAIN = WORDS - DISTINCTIVE
DIRECTIONS = set(states.Direction.values())
STATE_FIELDS = {"state", "status", "outcome", "direction", "stage_state", "kind", "new", "old"}
WRITERS = {"set_request_state": 1, "set_item_outcome": 1, "set_transfer_outcome": 1,
           "add_event": 1, "_alert": 0}
SQL = re.compile(r"\b(SELECT|UPDATE|INSERT|DELETE|WHERE|CHECK)\b")
_INDEX = getattr(ast, "Index", ())  # Python 3.8 wraps subscripts
QUOTED = re.compile(r"'([A-Za-z_-]+)'")

EXEMPT = {"states.py", "events.py"}

# TEMPORARY allowances (file -> literal counts) while a module is being moved
# onto the vocabulary: empty now; shrink, never grow.
ALLOWED: Dict[str, Dict[str, int]] = {
}
PERMANENT = {
    # The guard without the package (see the hook): one word, and it is checked
    # against states.Stage.STAGED_IN by test_runjob_fallback_word_is_the_vocabulary.
    "data/hooks/globus_staging_runjob.py": {"staged-in": 3},
    # Migrations v1..v3 as released: never edited (v4 is generated from the enums).
    "journal/schema.py": {"in": 2, "pending": 1},
}


def product_files() -> Iterator[Path]:
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel in EXEMPT or "__pycache__" in rel:
            continue
        yield path


def _docstrings(tree: ast.AST) -> set:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.add(id(body[0].value))
    return out


def _str(node: ast.AST):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _field_name(node: ast.AST):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "get" and node.args:
        return _str(node.args[0])
    if isinstance(node, ast.Subscript):
        key = node.slice.value if isinstance(node.slice, _INDEX) else node.slice  # py3.8
        return _str(key)
    return None


def _is_state_expr(node: ast.AST) -> bool:
    return _field_name(node) in STATE_FIELDS


def _literals(node: ast.AST) -> List[ast.Constant]:
    """The string literals of ``node`` itself or of its tuple/list/set elements."""
    if _str(node) is not None:
        return [node]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e for e in node.elts if _str(e) is not None]
    return []


def _one_vocabulary(values: List[str]) -> bool:
    return len(values) >= 2 and any(set(values) <= set(v.values()) for v in VOCABULARIES) \
        or len(values) >= 2 and set(values) <= set(states.Transfer.values()) | {"submitting"}


def scan_source(text: str) -> List[Tuple[int, str, str]]:
    """(line, word, rule) for every state word spelled in ``text``."""
    tree = ast.parse(text)
    docs = _docstrings(tree)
    found: Dict[int, Tuple[int, str, str]] = {}

    def flag(node: ast.AST, rule: str) -> None:
        word = _str(node)
        if word in WORDS and id(node) not in docs:
            found.setdefault(id(node), (node.lineno, word, rule))

    for node in ast.walk(tree):
        word = _str(node)
        if word is not None and id(node) not in docs:
            if word in DISTINCTIVE:
                flag(node, "distinctive")
            if SQL.search(word):
                for quoted in QUOTED.findall(word):
                    if quoted in WORDS:
                        found.setdefault(id(node), (node.lineno, quoted, "g: SQL"))
        if isinstance(node, ast.Compare):
            sides = [node.left] + list(node.comparators)
            if any(_is_state_expr(s) for s in sides):
                for s in sides:
                    for lit in _literals(s):
                        flag(lit, "a: compared with a state")
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in STATE_FIELDS:
                    for lit in _literals(kw.value):
                        flag(lit, f"b: {kw.arg}=")
            name = _field_name(node.func) if isinstance(node.func, (ast.Name, ast.Attribute)) \
                else None
            pos = WRITERS.get(name or "")
            if pos is not None and len(node.args) > pos:
                flag(node.args[pos], f"d: argument of {name}")
            if name == "get" and node.args and _str(node.args[0]) in DIRECTIONS:
                flag(node.args[0], "f: direction as a key")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(_field_name(t) in STATE_FIELDS for t in targets):
                for lit in _literals(node.value):
                    flag(lit, "c: assigned to a state")
        elif isinstance(node, ast.Subscript):
            key = node.slice.value if isinstance(node.slice, _INDEX) else node.slice
            if _str(key) in DIRECTIONS:
                flag(key, "f: direction as a key")
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            lits = [e for e in node.elts if _str(e) is not None]
            if len(lits) == len(node.elts) and _one_vocabulary([_str(e) for e in lits]):
                for lit in lits:
                    flag(lit, "e: a vocabulary spelled again")
        if isinstance(node, ast.ClassDef) and any(
                _field_name(b) in ("Enum", "IntEnum", "Word") for b in node.bases):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign):
                    flag(stmt.value, "h: an Enum member")
        if isinstance(node, ast.Dict):
            keys = [k for k in node.keys if k is not None and _str(k) is not None]
            vals = [v for v in node.values if _str(v) is not None]
            for group in (keys, vals):
                if len(group) == len(node.keys) and _one_vocabulary([_str(e) for e in group]):
                    for lit in group:
                        flag(lit, "e: a vocabulary spelled again")
            for k, v in zip(node.keys, node.values):
                if k is not None and _str(k) in STATE_FIELDS:
                    for lit in _literals(v):
                        flag(lit, f"b: {_str(k)!r}: in a dict")
    return sorted(found.values())


def scan_tree() -> Dict[str, List[Tuple[int, str, str]]]:
    out = {}
    for path in product_files():
        hits = scan_source(path.read_text(encoding="utf-8"))
        if hits:
            out[path.relative_to(PKG).as_posix()] = hits
    return out


def _over_allowance(found):
    problems = []
    for rel, hits in found.items():
        allowed = collections.Counter(ALLOWED.get(rel, {}))
        allowed.update(PERMANENT.get(rel, {}))
        seen = collections.Counter(word for _line, word, _rule in hits)
        for word, count in sorted(seen.items()):
            if count > allowed[word]:
                lines = [f"{rel}:{line}: {w!r} ({rule})" for line, w, rule in hits if w == word]
                problems.extend(lines)
    return problems


def test_no_state_word_is_spelled_outside_the_vocabulary():
    problems = _over_allowance(scan_tree())
    assert problems == [], ("state words spelled outside states.py/events.py; use the enum "
                            "members instead:\n" + "\n".join(problems))


def test_allowances_name_real_files_and_words():
    for table in (ALLOWED, PERMANENT):
        for rel, words in table.items():
            assert (PKG / rel).is_file(), rel
            assert set(words) <= WORDS, rel


def test_runjob_fallback_word_is_the_vocabulary():
    text = (PKG / "data/hooks/globus_staging_runjob.py").read_text()
    spelled = {w for _l, w, _r in scan_source(text)}
    assert spelled == {states.Stage.STAGED_IN.value}


# -- the rule itself ---------------------------------------------------------------

@pytest.mark.parametrize("code, rule", [
    ('x = "staged-in"', "distinctive"),
    ('f(mode="stagein_failed")', "distinctive"),
    ('if req.state == "pending": pass', "a:"),
    ('if t.status in ("new", "active"): pass', "a:"),
    ('if doc.get("status") != "ACTIVE": pass', "a:"),
    ('ok = direction == "in"', "a:"),
    ('j.update_transfer(1, status="canceled")', "b:"),
    ('j.transfers(status=("active",))', "b:"),
    ('status = "failed"', "c:"),
    ('self.state = "queued"', "c:"),
    ('j.set_item_outcome(1, "succeeded")', "d:"),
    ('j.add_event(job, "seen", "text")', "d:"),
    ('self._alert("slow", view)', "d:"),
    ('p.add_argument("--direction", choices=("in", "out"))', "e:"),
    ('M = {"done": "succeeded", "fatal": "failed"}', "e:"),
    ('LIVE = ("new", "submitting", "active")', "e:"),
    ('so = reqs.get("out")', "f:"),
    ('so = reqs["in"]', "f:"),
    ('q = "SELECT * FROM t WHERE outcome = \'pending\'"', "g:"),
    ('q = {"type": ["TRANSFER"], "status": ["ACTIVE", "INACTIVE"]}', "b:"),
    ('class D(str, enum.Enum):\n    IN = "in"\n    OUT = "out"', "h:"),
])
def test_the_rule_flags(code, rule):
    hits = scan_source(code)
    assert hits, code
    assert any(r.startswith(rule) for _l, _w, r in hits), hits


@pytest.mark.parametrize("code", [
    'def f():\n    """The request goes from pending to active."""',
    'msg = f"stage-{d} failed: {why}"',
    'x = "new"',                          # an ordinary word, not used as a state
    'print("in", "the", "queue")',
    'for word in ("in", "the"): pass',
    'mode = opts.get("new")',
    'q = "SELECT * FROM jobs WHERE owner = ?"',
    'text = "it failed"',
])
def test_the_rule_leaves_ordinary_strings_alone(code):
    assert scan_source(code) == []
