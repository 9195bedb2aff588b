"""Fault injection for meta tests: rewrite one function of the real code from its own source.

A fault is a list of (owner, name, regex, replacement): the owner a class (its method `name`)
or a module (its function `name`, which callers look up in the module at each call). Each regex
must match, so a meta test can never pass because the code it mutates has moved on. Used by the
pytest plugin tests/meta/faults.py and its test, tests/meta/test_faults.py.
"""

from __future__ import annotations
import __future__

import inspect
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parents[2]
Mutation = tuple[type | ModuleType, str, str, str]  # (owner, name, regex, replacement)


def mutate(owner: type | ModuleType, name: str, pattern: str, replacement: str) -> None:
    func: Callable[..., object] = getattr(owner, name)
    source = textwrap.dedent(inspect.getsource(func))
    mutated, count = re.subn(pattern, replacement, source)
    if count == 0:
        raise RuntimeError(f"fault injection: {pattern!r} not found in {owner.__name__}.{name}")
    module = sys.modules[func.__module__]
    namespace: dict[str, object] = {}
    code = compile(
        mutated,
        f"<fault in {owner.__name__}.{name}>",
        "exec",
        flags=__future__.annotations.compiler_flag,
    )
    exec(code, module.__dict__, namespace)
    setattr(owner, name, namespace[name])


def install(faults: dict[str, list[Mutation]], env_var: str) -> None:
    """Apply the fault named by the environment variable `env_var`, if any."""
    fault = os.environ.get(env_var)
    if fault:
        for owner, name, pattern, replacement in faults[fault]:
            mutate(owner, name, pattern, replacement)


def assert_suite_catches(plugin: str, env_var: str, fault: str, target: str) -> None:
    """Run `target` under pytest with `fault` injected by `plugin`; it must fail (exit 1: tests
    failed, not an error of the harness)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            plugin,
            target,
        ],
        cwd=ROOT,
        env={**os.environ, env_var: fault},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, (
        f"{target} did not catch {fault}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
    )
    assert "FAILED" in result.stdout
