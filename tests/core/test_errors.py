"""Every error kind the code records is declared in ERROR_KINDS (a kind outside it is a typo or a
kind the UI's tables do not know), found by scanning the source of assets/."""

import ast

import pytest

from assets.core.errors import ERROR_KINDS, ClipError
from assets.core.project_dirs import REPO_ROOT as REPO

# call name -> (positional index, keyword) of its kind argument
KIND_ARGUMENT = {"error_row": (2, "kind"), "_error_row": (0, "kind"), "ClipError": (0, "kind"),
                 "ClipResult": (None, "error_kind")}


def _called(node: ast.Call) -> str | None:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _literals(expr: ast.expr) -> list[ast.Constant]:
    """The string literals an expression can evaluate to: `"x"`, `kind or "x"`, `"x" if c else "y"`
    (not the keys of `m["status"]`)."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr]
    if isinstance(expr, ast.BoolOp):
        return [c for v in expr.values for c in _literals(v)]
    if isinstance(expr, ast.IfExp):
        return _literals(expr.body) + _literals(expr.orelse)
    return []


def recorded_kinds(source: str) -> list[tuple[int, str]]:
    """(line, kind) for every string literal the kind argument of an error-recording call can be."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or _called(node) not in KIND_ARGUMENT:
            continue
        index, keyword = KIND_ARGUMENT[_called(node)]
        args = [node.args[index]] if index is not None and len(node.args) > index else []
        args += [k.value for k in node.keywords if k.arg == keyword]
        found += [(c.lineno, c.value) for a in args for c in _literals(a)]
    return found


def test_the_scanner_reads_positional_keyword_and_nested_kinds():
    source = ('error_row(cid, split, "no_text", "m")\n'
              'rows.append(store.error_row(cid, split, kind="non_finite", message="m"))\n'
              'raise ClipError(kind or "corrupt", f"{path}: bad")\n'
              'ClipError("silent" if quiet else "too_short", msg)\n'
              'ClipResult(3, error_kind="timeout", error="slow")\n'
              '_error_row(m["status"], m["reason"])\n'  # a value read from a row: no literal to check
              'print("not_a_kind")\n')
    assert sorted(recorded_kinds(source)) == [(1, "no_text"), (2, "non_finite"), (3, "corrupt"), (4, "silent"),
                                              (4, "too_short"), (5, "timeout")]


def test_every_recorded_kind_is_declared():
    found = {(f"{p.relative_to(REPO)}:{line}", kind) for p in sorted((REPO / "assets").rglob("*.py"))
             for line, kind in recorded_kinds(p.read_text())}
    kinds = {kind for _, kind in found}
    # the scan sees the project: the teacher's kinds, the decoders' and the worker pool's
    assert {"corrupt_cache", "non_finite", "no_text", "corrupt", "odd_channels", "timeout", "worker_died"} <= kinds
    undeclared = sorted(f"{where}: {kind!r}" for where, kind in found if kind not in ERROR_KINDS)
    assert undeclared == [], "error kinds recorded but not in ERROR_KINDS:\n" + "\n".join(undeclared)


def test_error_kinds_are_unique_and_clip_error_checks_its_kind():
    assert len(set(ERROR_KINDS)) == len(ERROR_KINDS)
    for kind in ("corrupt_cache", "non_finite", "no_text"):
        assert ClipError(kind, "x.mp4: why").kind == kind
    with pytest.raises(ValueError, match="unknown clip error kind 'not_a_kind'"):
        ClipError("not_a_kind", "x.mp4: why")
