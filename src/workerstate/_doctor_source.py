"""The doctor's reading of a script or module's source: where tasks will not carry the state.

workerstate cannot see at run time, without patching joblib, that a joblib call makes its
tasks with plain ``joblib.delayed`` under a plain backend. So the doctor reads the source of
the modules it was given (with :mod:`ast`; nothing is run) and names each place that makes
tasks with a plain ``delayed``, and each call of a scikit-learn function that runs joblib
itself, unless the module switches workerstate on with ``workerstate.enable()`` or
``workerstate.enabled()``. In: a module's file. Out: a :class:`SourceReport`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from ._doctor_report import Section

__all__ = ["SKLEARN_PARALLEL", "SourceReport", "check_sources", "read_source"]

#: scikit-learn functions and classes that take ``n_jobs`` and run joblib themselves.
SKLEARN_PARALLEL = frozenset(
    {
        "cross_validate",
        "cross_val_score",
        "cross_val_predict",
        "permutation_test_score",
        "learning_curve",
        "validation_curve",
        "GridSearchCV",
        "RandomizedSearchCV",
        "HalvingGridSearchCV",
        "HalvingRandomSearchCV",
        "permutation_importance",
    }
)

# Modules whose ``delayed`` makes plain tasks that carry no registered state.
_PLAIN_DELAYED = ("joblib", "sklearn.utils.parallel", "sklearn.utils.fixes")


@dataclass
class SourceReport:
    """What the doctor found in one file: ``(line, text)`` pairs."""

    path: str
    enables: bool = False
    plain_delayed: list[tuple[int, str]] = field(default_factory=list)
    sklearn_calls: list[tuple[int, str]] = field(default_factory=list)


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for an attribute chain on a name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


class _Reader(ast.NodeVisitor):
    def __init__(self, report: SourceReport) -> None:
        self.report = report
        self.modules: dict[str, str] = {}  # local name -> module it is bound to
        self.names: dict[str, str] = {}  # local name -> module.name it was imported as

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname is not None:
                self.modules[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                self.modules[root] = root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module is None or node.level:
            return
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            self.names[alias.asname or alias.name] = full
            self.modules[alias.asname or alias.name] = full  # a submodule, maybe

    def _resolve(self, func: ast.expr) -> str | None:
        dotted = _dotted(func)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        if not rest:
            return self.names.get(head)
        base = self.modules.get(head)
        return None if base is None else f"{base}.{rest}"

    def visit_Call(self, node: ast.Call) -> None:
        target = self._resolve(node.func)
        if target is not None:
            module, _, name = target.rpartition(".")
            root = module.split(".")[0]
            shown = _dotted(node.func) or name
            if root == "workerstate" and name in ("enable", "enabled"):
                self.report.enables = True
            elif name == "delayed" and module in _PLAIN_DELAYED:
                self.report.plain_delayed.append((node.lineno, f"{shown}(...) ({target})"))
            elif root == "sklearn" and name in SKLEARN_PARALLEL:
                self.report.sklearn_calls.append((node.lineno, f"{shown}(...)"))
        self.generic_visit(node)


def read_source(path: str) -> SourceReport:
    """Read the file at ``path`` and report what :class:`SourceReport` holds.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
    ...     _ = file.write("from joblib import Parallel, delayed\\n"
    ...                    "Parallel(n_jobs=2)(delayed(abs)(i) for i in range(3))\\n")
    >>> read_source(file.name).plain_delayed
    [(2, 'delayed(...) (joblib.delayed)')]
    """
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), filename=path)
    report = SourceReport(path)
    _Reader(report).visit(tree)
    return report


def check_sources(paths: list[str], callbacks: list[str], section: Section) -> None:
    """Report, when ``callbacks`` are registered, the places in ``paths`` whose tasks will
    not carry them: plain ``delayed`` and scikit-learn's own joblib calls."""
    from ._enable import is_enabled

    if not callbacks or not paths:
        return
    names = ", ".join(repr(name) for name in callbacks)
    for path in paths:
        try:
            found = read_source(path)
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            section.add("NOTE", f"{path} could not be read: {exc}")
            continue
        if found.enables or is_enabled():
            section.add(
                "OK",
                f"{path} calls workerstate.enable(): every joblib call carries {names}",
            )
            continue
        for line, text in found.plain_delayed:
            section.add(
                "PROBLEM",
                f"{path}:{line}: {text} makes plain joblib tasks, which do not carry the "
                f"registered state ({names}) unless workerstate is enabled: their workers "
                "keep their own state and nothing warns",
                advice="Call workerstate.enable() once at the start of the program, so that "
                "every joblib call carries the state whichever delayed made its tasks; or "
                "make the tasks with workerstate.parallel.delayed "
                "(`from workerstate.parallel import delayed`).",
            )
        for line, text in found.sklearn_calls:
            section.add(
                "NOTE",
                f"{path}:{line}: {text} runs joblib itself, with plain tasks: with n_jobs "
                f"above 1 its workers do not get {names}",
                advice="scikit-learn makes its own tasks: call workerstate.enable() first, or "
                'run it under `with joblib.parallel_config(backend="workerstate"):`.',
            )
        if not (found.plain_delayed or found.sklearn_calls):
            section.add("OK", f"{path} makes no plain joblib tasks")
