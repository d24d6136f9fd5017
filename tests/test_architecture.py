"""The package's shape stays as docs/architecture.md draws it: the layer contract and the cycle
check of ``scripts/check`` catch a violation (shown by planting one in a copy of the package),
the error tree drawn in ``conveyor/errors.py`` is the real one, few top-level modules, none too
long, and the old module paths still work with a warning."""

from __future__ import annotations

import importlib
import inspect
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from support import ROOT

import conveyor
from conveyor import _moved, errors

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy(tmp_path: Path) -> Path:
    """The package, pyproject.toml and scripts/ copied to ``tmp_path``."""
    shutil.copytree(
        ROOT / "conveyor", tmp_path / "conveyor", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        check=False,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cycles(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(tree / "scripts" / "cycles.py")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / module
    text = path.read_text()
    head, sep, rest = text.partition("\nfrom __future__ import annotations\n")
    path.write_text(f"{head}{sep}{line}\n{rest}" if sep else f"{line}\n{text}")


@pytest.mark.slow
def test_the_layer_contract_fails_on_an_upward_import(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    assert _lint(tree).returncode == 0, "the real package keeps its layers"
    # The Redis layer reaching up into the core (even only for type checking) is refused.
    _plant(
        tree,
        "conveyor/redis/keys.py",
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from conveyor.core.app import App",
    )
    broken = _lint(tree)
    assert broken.returncode != 0
    assert "conveyor.redis.keys -> conveyor.core.app" in broken.stdout, broken.stdout


@pytest.mark.slow
def test_the_cycle_check_fails_on_a_function_level_cycle(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    assert _cycles(tree).returncode == 0, _cycles(tree).stdout
    # job.py is imported by app.py; a lazy import back is still a cycle.
    path = tree / "conveyor" / "core" / "job.py"
    path.write_text(
        path.read_text() + "\n\ndef _sneaky() -> object:\n    from conveyor.core import app\n\n"
        "    return app\n"
    )
    found = _cycles(tree)
    assert found.returncode == 1
    assert "conveyor.core.app" in found.stdout and "conveyor.core.job" in found.stdout


def _drawn_tree() -> dict[str, str]:
    """class -> parent, as drawn at the top of conveyor/errors.py."""
    doc = errors.__doc__ or ""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        found = re.match(
            r"^([│ ]*)(?:[├└]── )?(\w+Error|\w+Rejected|\w+Context|\w+Found|\w+Forbidden)\b", line
        )
        if not found:
            continue
        depth = len(found.group(1)) // 4 + (1 if "──" in line else 0)
        name = found.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_the_error_tree_drawn_in_errors_py_is_the_real_one() -> None:
    real = {
        name: cls.__mro__[1].__name__
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ConveyorError) and cls is not errors.ConveyorError
    }
    assert _drawn_tree() == real


def test_few_top_level_modules_and_none_too_long() -> None:
    top = sorted(p.name for p in (ROOT / "conveyor").glob("*.py"))
    assert len(top) <= 8, top
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "conveyor").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, f"split these modules: {long}"


def test_old_module_paths_give_the_same_module_with_a_warning() -> None:
    for old, new in sorted(_moved.MOVED.items()):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=re.escape(f"{old} moved to {new}")):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
        assert module.__spec__ is not None and module.__spec__.name == new
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from conveyor.launcher import Worker  # a name through an old path
    assert Worker is conveyor.Worker


def test_the_public_facade_is_unchanged() -> None:
    # (NotDurableError, raised by an enqueue with min_replicas, was added after the split.)
    assert conveyor.__all__ == [
        "App",
        "ClientMiddleware",
        "Clock",
        "ConfigurationError",
        "ConveyorError",
        "EmbeddedRedisError",
        "EnqueueContext",
        "EnqueueError",
        "EnqueueResult",
        "FakeClock",
        "FunctionJob",
        "Job",
        "JobContext",
        "JobTimeoutError",
        "Middleware",
        "NotDurableError",
        "NotFoundError",
        "PayloadError",
        "SerializationError",
        "ServerMiddleware",
        "Settings",
        "SystemClock",
        "UnknownJobClassError",
        "UnknownOptionError",
        "Worker",
        "__version__",
    ]
