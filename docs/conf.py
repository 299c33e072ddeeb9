"""Sphinx configuration of the dkist-processing-core documentation.

Build it the way CI does (warnings are errors): ``hatch run gates:docs``, i.e.
``sphinx-build -W --keep-going -b html docs docs/_build/html`` in an environment with the four
members installed (``hatch shell``). The API reference documents the installed, merged
``dkist_processing_core`` package; its pages, the environment-variable table and the table of
distributions are generated here from the workspace's own sources at each build (``_generated/``,
not committed), so they cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO_ROOT = DOCS.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import env_table  # noqa: E402
import workspace_members  # noqa: E402

project = "dkist-processing-core"
author = "NSO / DKIST Data Center"
copyright = "NSO / DKIST Data Center"
release = workspace_members.meta().version

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "sphinxcontrib.mermaid",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated"]
myst_heading_anchors = 3
myst_fence_as_directive = ["mermaid"]
# sphinx-argparse's domain cannot resolve MyST's "any" references (a notice, not a broken link)
suppress_warnings = ["myst.domains"]

html_theme = "dkist"
html_title = "dkist-processing-core"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "separated"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

GENERATED = DOCS / "_generated"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
        path.write_text(text)


def _api_page(member: workspace_members.Project) -> str:
    title = f"{member.dist} {member.version}"
    lines = [title, "=" * len(title), ""]
    lines += [
        f"Installed with ``pip install {member.dist}``; layer {member.layer} of the import layers "
        "(a module imports only from its own distribution and from lower layers).",
        "",
    ]
    for module in member.public_modules():
        lines += [module, "-" * len(module), ""]
        if module == workspace_members.PACKAGE:
            # the package's names are the modules' classes, loaded on first use (PEP 562):
            # documented where they are defined
            lines += [f".. automodule:: {module}", "   :no-members:", ""]
        else:
            lines += [f".. automodule:: {module}", ""]
    return "\n".join(lines)


def _distributions_table() -> str:
    lines = [
        "| distribution | version | layer | public modules |",
        "| --- | --- | --- | --- |",
    ]
    for member in workspace_members.members(REPO_ROOT):
        modules = ", ".join(f"`{name}`" for name in member.public_modules())
        lines.append(
            f"| {{doc}}`{member.dist} </api/{member.key}>` | {member.version} | {member.layer} "
            f"| {modules} |"
        )
    meta = workspace_members.meta(REPO_ROOT)
    lines.append(f"| {meta.dist} (meta) | {meta.version} | | installs all four |")
    return "\n".join(lines) + "\n"


def generate(_app: object = None) -> None:
    """Write the generated pages: one API page per member, the tables."""
    for member in workspace_members.members(REPO_ROOT):
        _write(DOCS / "api" / f"{member.key}.rst", _api_page(member))
    _write(GENERATED / "env_table.md", env_table.render_table() + "\n")
    _write(GENERATED / "distributions.md", _distributions_table())


def setup(app: object) -> None:
    app.connect("builder-inited", generate)  # type: ignore[attr-defined]
