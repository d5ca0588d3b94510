"""Local Sphinx extension: render asyncpool's docstrings and signatures well.

Nothing here changes the package; it only changes what Sphinx renders.

1. Markdown in docstrings. The package's docstrings are Google style (napoleon
   parses their sections) but use Markdown inline code (`name`) and fenced code
   blocks, which reST does not know: a fence is a docutils error and a single
   backtick renders as italic text. Before napoleon runs, this rewrites

   * a fenced block into a ``.. code-block::`` directive;
   * `dotted.name` or `name()` into a ``:py:obj:`` cross-reference (a link when
     the target is documented, plain code otherwise);
   * any other `text` into an inline literal.

2. Classes users never instantiate show no constructor signature: `Job` and its
   bases (and the `Codec` protocol) would show `typing.Protocol`'s
   ``(*args, **kwargs)``, `JobHandle` would show `asyncio.Future`'s
   ``(*, loop=None)``, and `RemoteHandle` its broker's private plumbing.

3. Sphinx (8 and 9, on Python 3.11) stringifies a `typing.ParamSpec` with its
   repr, so the `submit` overloads would read ``*args: ~typing.~P``; this
   teaches it ``Callable[P, T]``, ``*args: P.args`` and ``**kwargs: P.kwargs``.
"""

from __future__ import annotations

import collections.abc
import re
import typing
from typing import Any

from sphinx.application import Sphinx

# Classes whose inherited constructor signature says nothing useful.
NO_SIGNATURE = frozenset(
    {
        "asyncpool.Job",
        "asyncpool.AsyncJob",
        "asyncpool.SyncJob",
        "asyncpool.JobHandle",
        "asyncpool.brokers.Codec",
        "asyncpool.brokers.RemoteHandle",
    }
)

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
# A trailing "s" is a Markdown plural ("the `JobHandle`s"), kept outside the markup.
_INLINE = re.compile(r"(?<![`:\w])`(?P<text>[^`\n]+)`(?P<plural>s?)(?![`\w])")
_IDENTIFIER = re.compile(r"^[A-Za-z_][\w.]*(\(\))?$")


def _inline(match: re.Match[str]) -> str:
    text = match["text"]
    # reST needs a boundary after inline markup; an escaped space is one that renders as nothing.
    plural = "\\ s" if match["plural"] else ""
    if _IDENTIFIER.match(text):
        return f":py:obj:`{text}`{plural}"
    return f"``{text}``{plural}"


def markdown_to_rest(lines: list[str]) -> list[str]:
    """Return `lines` with Markdown code fences and inline code turned into reST."""
    out: list[str] = []
    fence_indent: str | None = None
    for line in lines:
        if fence_indent is None:
            opening = _FENCE.match(line)
            if opening:
                fence_indent = opening["indent"]
                lang = opening["lang"] or "text"
                if out and out[-1].strip():
                    out.append("")
                out.extend([f"{fence_indent}.. code-block:: {lang}", ""])
            else:
                out.append(_INLINE.sub(_inline, line))
        elif line.strip() == "```":
            fence_indent = None
            out.append("")
        else:
            # Code keeps its indentation relative to the fence, under the directive.
            body = line[len(fence_indent) :] if line.startswith(fence_indent) else line.lstrip()
            out.append(f"{fence_indent}   {body}" if body else "")
    return out


def _process_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    lines[:] = markdown_to_rest(lines)


def _process_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str] | None:
    if what == "class" and name in NO_SIGNATURE:
        return "", ""
    return None


def _patch_paramspec_stringify() -> None:
    try:
        import sphinx.util.inspect as sphinx_inspect
        import sphinx.util.typing as sphinx_typing
    except ImportError:  # pragma: no cover - a future Sphinx layout
        return
    original = sphinx_typing.stringify_annotation
    if getattr(original, "_asyncpool_patched", False):
        return

    def stringify_annotation(annotation: Any, /, mode: Any = None, **kwargs: Any) -> str:
        if mode is None:
            mode = "fully-qualified-except-typing"
        if isinstance(annotation, typing.ParamSpec):
            return annotation.__name__
        if isinstance(annotation, typing.ParamSpecArgs):
            return f"{annotation.__origin__.__name__}.args"
        if isinstance(annotation, typing.ParamSpecKwargs):
            return f"{annotation.__origin__.__name__}.kwargs"
        args = typing.get_args(annotation)
        if (
            typing.get_origin(annotation) is collections.abc.Callable
            and len(args) == 2
            and isinstance(args[0], typing.ParamSpec)
        ):
            prefix = "~" if mode == "smart" else ""
            returns = stringify_annotation(args[1], mode, **kwargs)
            return f"{prefix}collections.abc.Callable[{args[0].__name__}, {returns}]"
        return original(annotation, mode, **kwargs)

    stringify_annotation._asyncpool_patched = True  # type: ignore[attr-defined]
    # Sphinx calls it through both module globals (recursively, for arguments).
    sphinx_typing.stringify_annotation = stringify_annotation
    sphinx_inspect.stringify_annotation = stringify_annotation


def setup(app: Sphinx) -> dict[str, Any]:
    # Napoleon handles the same event at the default priority (500): run first.
    app.connect("autodoc-process-docstring", _process_docstring, priority=400)
    app.connect("autodoc-process-signature", _process_signature)
    _patch_paramspec_stringify()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
