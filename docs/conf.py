"""Sphinx configuration for the asyncpool docs.

Why this stack: the docstrings live in the code and autodoc (with napoleon,
for their Google style) turns them into the API reference, so signatures are
never typed by hand; MyST lets every other page be Markdown; furo is a clean,
readable theme. intersphinx is not used: the docs must build offline.

Build: `make docs`, i.e. `sphinx-build -W --keep-going -q -b html docs docs/_build/html`.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # `import asyncpool` from the work tree
sys.path.insert(0, str(DOCS / "_ext"))  # local extensions

import asyncpool  # noqa: E402

project = "asyncpool"
author = "The asyncpool developers"
copyright = "The asyncpool developers"
release = asyncpool.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "autodoc_tweaks",  # docs/_ext/autodoc_tweaks.py
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"

# Unresolvable references (to the standard library, without intersphinx) are
# rendered as plain code instead of failing the build.
nitpicky = False

html_theme = "furo"
html_title = f"asyncpool {release}"
html_static_path = ["_static"]
pygments_style = "sphinx"
pygments_dark_style = "monokai"
