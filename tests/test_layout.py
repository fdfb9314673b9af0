"""The package's layout: imports between progan's modules point one way (no cycle, imports inside
functions and under TYPE_CHECKING included), every subpackage says what lives in it, and no test
module imports another (shared helpers live in conftest.py and helpers.py).

Run alone to see the graph's check: ``pytest -q tests/test_layout.py``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "progan"
TESTS = ROOT / "tests"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def progan_modules() -> dict[str, Path]:
    return {module_name(p, ROOT): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The progan modules that the file ``path`` (module ``name``) imports anywhere in it.

    ``from A import b`` names module ``A.b`` when that is a module, else ``A``. Importing a module
    runs its packages' ``__init__`` first, so those packages are imported too, except the ones the
    importer sits in (already being imported when it runs).
    """
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join(here + ([node.module] if node.module else []))
            for a in node.names:
                targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    out = set()
    for t in targets:
        if t not in known:
            continue
        parts = t.split(".")
        out.update(
            p
            for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
            if p in known and p not in own
        )
    out.discard(name)
    return out


@functools.cache
def import_graph() -> dict[str, set[str]]:
    modules = progan_modules()
    known = set(modules)
    return {name: imported(path, name, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_inside_functions_and_of_packages_are_edges(tmp_path):
    pkg = tmp_path / "progan" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "progan" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from progan.sub import a\n")
    (pkg / "a.py").write_text("def f():\n    from progan.other import x\n")
    (tmp_path / "progan" / "other.py").write_text("from progan.sub.a import f\n")
    known = {"progan", "progan.sub", "progan.sub.a", "progan.other"}
    assert imported(pkg / "a.py", "progan.sub.a", known) == {"progan.other"}
    # Importing progan.sub.a runs progan/sub/__init__.py first: other -> sub -> a -> other.
    assert imported(tmp_path / "progan" / "other.py", "progan.other", known) == {
        "progan.sub",
        "progan.sub.a",
    }
    assert imported(pkg / "__init__.py", "progan.sub", known) == {"progan.sub.a"}


def test_the_import_graph_of_the_package_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 50 and graph["progan.train.loop"], "the walk found the package's modules"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("leaf", ["progan.errors", "progan.config.levels", "progan.nets.registry"])
def test_leaf_modules_import_no_more_than_errors(leaf):
    assert import_graph()[leaf] <= {"progan.errors"}


def test_the_config_does_not_import_the_networks_nor_the_store_the_config():
    graph = import_graph()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    nets = {m for m in graph if m.startswith("progan.nets.")} - {"progan.nets.registry"}
    assert not reach("progan.config.schema") & nets
    for store in ("progan.store.reader", "progan.store.format", "progan.store.writer"):
        assert "progan.config.schema" not in reach(store), store


def test_every_subpackage_says_what_lives_in_it():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(ROOT)} has no docstring"
        sub = sorted(p.stem for p in init.parent.glob("*.py") if p.stem != "__init__")
        if init.parent != PACKAGE:
            missing = [s for s in sub if f"``{s}``" not in doc]
            assert not missing, f"{init.relative_to(ROOT)} does not name {missing}"


def test_no_test_module_imports_another():
    tests = {p.stem for p in TESTS.glob("test_*.py")}
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad = [n for n in names if n.split(".")[0] in tests]
            assert not bad, f"{path.name} imports test module {bad[0]}"


def test_every_top_level_function_and_class_is_used_or_documented():
    """Dead code: a function or class of progan that nothing names besides its own definition
    (code, tools, tests and docs searched as text)."""
    import collections
    import re

    words = collections.Counter()
    for p in (
        *PACKAGE.rglob("*.py"),
        *(ROOT / "tools").glob("*.py"),
        *TESTS.glob("*.py"),
        *ROOT.glob("*.md"),
        *ROOT.glob("*/*.md"),
    ):
        words.update(re.findall(r"\w+", p.read_text()))
    unused = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and words[node.name] < 2:
                unused.append(f"{module_name(path, ROOT)}.{node.name}")
    assert not unused, f"defined but never used: {unused}"


def test_tick_statistics_take_no_process_count_they_would_ignore():
    """The means over processes come from the process group (all_mean), not from an argument."""
    import inspect

    import torch

    from progan.train.reporting import Ticks, TickStats

    assert list(inspect.signature(TickStats.read_and_reset).parameters) == ["self"]
    assert list(inspect.signature(Ticks.close).parameters) == ["self", "images_shown"]
    stats = TickStats(torch.device("cpu"))
    stats.add(loss=torch.tensor(1.0))
    stats.add(loss=torch.tensor(3.0))
    assert stats.read_and_reset() == {"loss": 2.0} and stats.read_and_reset() == {}


def test_every_markdown_file_the_project_names_is_in_the_repository():
    """A reference such as ``docs/design.md`` or ``datasets/README.md`` in code, tests, tools or docs
    names a file of the repository (relative to the root or to the file that names it)."""
    import re
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    names = {Path(f).name for f in tracked}
    missing = []
    for f in tracked:
        if not f.endswith((".py", ".md", ".toml", "Makefile", "run")) or f.startswith(
            "tests/fixtures/"
        ):
            continue
        for ref in re.findall(r"(?<![\w/.:-])([\w.-]+(?:/[\w.-]+)*\.md)\b", (ROOT / f).read_text()):
            here = (ROOT / f).parent
            if not (
                (ROOT / ref).is_file()
                or (here / ref).is_file()
                or ("/" not in ref and ref in names)
            ):
                missing.append(f"{f}: {ref}")
    assert not missing, missing


def test_the_loop_picks_an_architectures_trainer_from_one_table_not_by_name_tests():
    """StyleGAN2 trains its own way; ProGAN's step serves the others, a newly registered one too
    (tests/test_arch.py trains one)."""
    from progan.nets.registry import ARCHITECTURES
    from progan.train import loop, stylegan2_step

    assert set(loop.TRAINERS) <= set(ARCHITECTURES)
    assert loop.trainer_of("stylegan2").enter_phase is stylegan2_step.enter_phase
    assert loop.trainer_of("progan") is loop.trainer_of("stylegan") is loop.PAPER_TRAINER
    assert loop.trainer_of("a-new-arch") is loop.PAPER_TRAINER
    source = (PACKAGE / "train" / "loop.py").read_text()
    assert "cfg.arch ==" not in source and "arch == " not in source
