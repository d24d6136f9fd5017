"""Who may set which variable of a step, and how caller data stays data.

Two kinds of variables reach a step:

- **operator variables**: the workflow's and the step's ``vars`` in the settings file, and the
  engine's own (``prepare_path``, ``conveyor_result_path``, the complete step's ``_*`` totals).
  They are trusted: an Ansible step may template them.
- **caller data**: request variables (HTTP ``/vars/...``, ``--vars``) and a task line's
  variables (written by the prepare step, often from file names). They are strings that reach an
  Ansible step as ``!unsafe`` values (never templated) and a ``python:`` step as plain strings.

A caller may not set an operator variable: :func:`check_caller_vars` refuses the request with
:class:`~conveyor.errors.VariableRejected` naming the variable. The engine's names and Ansible's
magic names are reserved the same way, so the two kinds never overlap and no precedence rule
between them is needed.

>>> from conveyor.automation.settings import parse_automation_settings
>>> s = parse_automation_settings({"functions": {"backend": {"automation": {"workflows": [
...     {"name": "w", "vars": {"src": "/in"}, "steps": {"execute": {"playbook": "x.yml"}}}]}}}})
>>> check_caller_vars(s.workflow("w"), {"file": "a.jpg"})
{'file': 'a.jpg'}
>>> check_caller_vars(s.workflow("w"), {"src": "/etc"})
Traceback (most recent call last):
...
conveyor.errors.VariableRejected: variable 'src' is set by the operator for workflow 'w' ...
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from conveyor.automation.settings import Workflow
from conveyor.errors import VariableRejected

#: Variable names: identifiers (they become Ansible variables and Python dict keys).
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Names the engine sets or the example workflows treat as operator-only.
ENGINE_NAMES = frozenset({"prepare_path", "conveyor_result_path", "src_dir", "dest_dir"})
#: Prefixes of names the engine or Ansible own (``_request_total``, ``ansible_connection``...).
RESERVED_PREFIXES = ("ansible_", "conveyor_", "_")
#: Ansible's magic variables and the Jinja globals a variable would shadow in a playbook.
ANSIBLE_NAMES = frozenset(
    {
        "hostvars",
        "groups",
        "group_names",
        "inventory_hostname",
        "inventory_hostname_short",
        "inventory_dir",
        "inventory_file",
        "playbook_dir",
        "play_hosts",
        "role_name",
        "role_names",
        "role_path",
        "environment",
        "omit",
        "lookup",
        "query",
        "q",
        "now",
        "undef",
        "range",
        "dict",
        "lipsum",
        "cycler",
        "joiner",
        "namespace",
        "vars",
    }
)
#: Values shorter than this are redacted only where they stand alone (``a1`` in ``a1 failed``,
#: not inside ``a12``): hiding every ``1`` would make messages unreadable.
_SHORT = 4
REDACTED = "[redacted]"


def operator_names(workflow: Workflow) -> frozenset[str]:
    """Every variable the settings file sets for ``workflow`` (its ``vars`` and every step's)."""
    names = set(workflow.vars)
    for step in (workflow.steps.prepare, workflow.steps.execute, workflow.steps.complete):
        if step is not None:
            names.update(step.vars)
    return frozenset(names)


def reserved(name: str) -> bool:
    """Whether ``name`` belongs to the engine or to Ansible (never a caller's).

    >>> reserved("ansible_connection"), reserved("_fail_total"), reserved("file")
    (True, True, False)
    """
    return name in ENGINE_NAMES or name in ANSIBLE_NAMES or name.startswith(RESERVED_PREFIXES)


def check_caller_vars(
    workflow: Workflow, variables: Mapping[str, Any] | None, *, where: str = "the request"
) -> dict[str, str]:
    """``variables`` as ``{name: str}`` if a caller may set every one of them, else
    :class:`VariableRejected` naming the first bad name (never a value). ``where`` says where
    they came from in the message (``"the request"``, ``"prepare file line 3"``)."""
    operator = operator_names(workflow)
    out: dict[str, str] = {}
    for key, value in (variables or {}).items():
        if not isinstance(key, str) or not NAME_RE.match(key):
            raise VariableRejected(
                f"bad variable name {key!r} in {where}: use letters, digits and '_', not "
                "starting with a digit",
                str(key),
            )
        if key in operator:
            raise VariableRejected(
                f"variable {key!r} is set by the operator for workflow {workflow.name!r} (in its "
                f"settings) and cannot be overridden by {where}; drop it",
                key,
            )
        if reserved(key):
            raise VariableRejected(
                f"variable {key!r} is reserved for the engine or Ansible and cannot be set by "
                f"{where}; rename it",
                key,
            )
        text = value if isinstance(value, str) else str(value)
        if _has_surrogates(text):
            raise VariableRejected(
                f"variable {key!r} in {where} is not valid Unicode text; send UTF-8", key
            )
        out[key] = text
    return out


def _has_surrogates(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def redact(text: str | None, values: Iterable[str]) -> str | None:
    """``text`` with every caller value replaced by ``[redacted]``, so failure messages and log
    lines never carry a caller's data; values under 4 characters only where they stand alone.

    >>> redact("cannot open /home/alice/a.jpg", ["alice", "a.jpg"])
    'cannot open /home/[redacted]/[redacted]'
    >>> redact("exit 1 for id 7", ["7"])
    'exit 1 for id [redacted]'
    """
    if not text:
        return text
    # Longest first: a value that contains another is hidden whole.
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        if len(value) >= _SHORT:
            text = text.replace(value, REDACTED)
        else:
            pattern = rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])"
            text = re.sub(pattern, REDACTED, text)
    return text


def unsafe_yaml(variables: Mapping[str, str]) -> str:
    """A YAML document of ``variables``, every value tagged ``!unsafe`` (Ansible never templates
    such a value, nor anything derived from it) and written as a double-quoted scalar escaping
    everything but printable ASCII, so no value can end its scalar or change the document.

    >>> print(unsafe_yaml({"f": "{{ lookup('pipe', 'id') }}\\n"}), end="")
    f: !unsafe "{{ lookup('pipe', 'id') }}\\n"
    """
    lines = []
    for key, value in variables.items():
        if not NAME_RE.match(key):
            raise ValueError(f"bad variable name {key!r}")
        # ansible-core 2.19 loads `!unsafe ""` as null; an empty string holds no template.
        tag = "!unsafe " if value else ""
        lines.append(f"{key}: {tag}{_quoted(value)}\n")
    return "".join(lines) or "{}\n"


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x00": "\\0"}


def _quoted(value: str) -> str:
    out = []
    for ch in value:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'
