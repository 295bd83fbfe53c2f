"""A griffe extension for mkdocs.yml: docstrings as the reference shows them.

- The docstrings say :class:`Pool` and :meth:`open` (Sphinx roles), which
  mkdocstrings would print as they are. A public name (one of the package's
  ``__all__``) becomes a link to its reference entry; any other name (a
  private helper, a method) becomes inline code, so no link can dangle.
- Public names without a docstring in the source get one: the cursor
  dependencies are made by a factory (their docstring exists at run time
  only), and the ``Annotated`` aliases carry a ``#:`` comment.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import griffe

import fastapi_mysqlpool

ROLE = re.compile(r":(?:class|func|meth|attr|exc|data|mod|obj):`~?\.?([^`]+)`")
PUBLIC = frozenset(fastapi_mysqlpool.__all__)


def markdown(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in PUBLIC:
            return f"[`{name}`][fastapi_mysqlpool.{name}]"
        return f"`{name}`"

    return ROLE.sub(replace, text)


def comment_above(obj: griffe.Object) -> str | None:
    """The ``#:`` comment lines right above *obj*'s first line, if any."""
    if obj.lineno is None or obj.filepath is None or isinstance(obj.filepath, list):
        return None
    lines = obj.filepath.read_text().splitlines()[: obj.lineno - 1]
    comment: list[str] = []
    while lines and lines[-1].lstrip().startswith("#:"):
        comment.insert(0, lines.pop().lstrip()[2:].strip())
    return "\n".join(comment) or None


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "fastapi_mysqlpool":
            return
        for name in fastapi_mysqlpool.__all__:
            target = pkg[name].final_target
            if target.docstring is not None:
                continue
            runtime = getattr(fastapi_mysqlpool, name)
            text = (
                inspect.getdoc(runtime) if inspect.isroutine(runtime) else None
            ) or comment_above(target)
            if text:
                target.docstring = griffe.Docstring(markdown(text), parent=target)
