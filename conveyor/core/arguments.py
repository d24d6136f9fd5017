"""Checking a job's arguments at enqueue time against ``perform``'s signature, so
``add.perform_async(1)`` for ``add(a, b)`` fails in the caller instead of failing 25 times in a
worker. Jobs receive positional JSON arguments only, so the check is a count: the signature is
read once per class and only a failing call pays for ``inspect.Signature.bind`` (to word the
message).

>>> def add(a: int, b: int) -> None: ...
>>> ArgSpec.of_function(add).check("add", [1])
Traceback (most recent call last):
conveyor.errors.EnqueueError: add(a, b) cannot run with 1 argument: missing a required ...
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.errors import EnqueueError

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class ArgSpec:
    """How many positional arguments a ``perform`` takes."""

    signature: inspect.Signature
    least: int
    #: ``None`` with ``*args``.
    most: int | None
    #: Keyword-only parameters without a default: no enqueue can ever fill them.
    required_keywords: tuple[str, ...]

    @classmethod
    def of_function(cls, func: Callable[..., Any], *, skip_self: bool = False) -> ArgSpec:
        """The spec of ``func`` (without its first parameter when ``skip_self``)."""
        params = list(inspect.signature(func).parameters.values())[1 if skip_self else 0 :]
        bare = inspect.Signature(
            [p.replace(annotation=inspect.Parameter.empty) for p in params],
        )
        positional = [p for p in params if p.kind in _POSITIONAL]
        return cls(
            signature=bare,
            least=sum(1 for p in positional if p.default is p.empty),
            most=None if any(p.kind is p.VAR_POSITIONAL for p in params) else len(positional),
            required_keywords=tuple(
                p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty
            ),
        )

    def check(self, job: str, args: Sequence[Any]) -> None:
        """Raise :class:`EnqueueError` when ``perform`` cannot take ``args``."""
        count = len(args)
        if (
            self.least <= count
            and (self.most is None or count <= self.most)
            and not self.required_keywords
        ):
            return
        try:
            self.signature.bind(*args)
            reason = "it cannot be called with positional arguments only"
        except TypeError as exc:
            reason = str(exc)
        plural = "argument" if count == 1 else "arguments"
        raise EnqueueError(
            f"{job}{self.signature} cannot run with {count} {plural}: {reason}; pass the "
            "arguments perform takes, in order (or declare the job with check_args=False when "
            "another process runs it or its signature is dynamic)"
        )


_SPECS: weakref.WeakKeyDictionary[type, ArgSpec | None] = weakref.WeakKeyDictionary()


def spec_of(job_class: type) -> ArgSpec | None:
    """The class's spec (cached), or ``None`` when its signature cannot be read."""
    if job_class in _SPECS:
        return _SPECS[job_class]
    func = getattr(job_class, "func", None)
    try:
        spec: ArgSpec | None = (
            ArgSpec.of_function(func)
            if callable(func)
            else ArgSpec.of_function(job_class.perform, skip_self=True)  # type: ignore[attr-defined]
        )
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
        spec = None
    _SPECS[job_class] = spec
    return spec


def refuse_keywords(job: str, method: str, kwargs: Mapping[str, Any]) -> None:
    """Raise the hint that jobs take positional JSON arguments (``perform_async(a=1)``)."""
    if not kwargs:
        return
    names = ", ".join(sorted(kwargs))
    as_dict = ", ".join(f"{n!r}: ..." for n in sorted(kwargs))
    raise EnqueueError(
        f"{job}.{method} got keyword argument(s) {names}: jobs take positional JSON arguments "
        f"only (Sidekiq's wire format). Pass them in order ({job}.{method}(1, 2)), or pass one "
        f"dict argument ({job}.{method}({{{as_dict}}}))"
    )
