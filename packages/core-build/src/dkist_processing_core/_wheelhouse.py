"""A local wheelhouse from which a node's throw-away venv can install the pipeline without an index.

On a worker, the worker program runs ``pip install "<dist>[frozen]==<version>"`` against the
package index. Running the DAG on a developer machine (``run --engine airflow``) needs the same to
work for a pipeline that is only installed from its source tree (editable). This module finds the
distributions that are installed from local folders (the pipeline and, in this repository, the
dkist-processing-core members: PEP 610 ``direct_url.json``), builds them with ``pip wheel`` into one
folder together with all their third-party dependencies, so that ``PIP_NO_INDEX=1`` and
``PIP_FIND_LINKS=<folder>`` are all pip needs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import Distribution
from importlib.metadata import PackageNotFoundError
from importlib.metadata import distribution as find_distribution
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlparse

from dkist_processing_core._pinned import canonical_name
from dkist_processing_core._pinned import parse_version
from dkist_processing_core.errors import DKISTProcessingCoreError

__all__ = ["WheelhouseError", "ensure_wheelhouse", "has_wheel", "local_sources"]


class WheelhouseError(DKISTProcessingCoreError, RuntimeError):
    """The wheelhouse could not be built."""


def _local_folder(dist: Distribution) -> Path | None:
    """The source folder a distribution was installed from (``pip install [-e] <folder>``), if any."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return None
    url = info.get("url", "")
    if "dir_info" not in info or not url.startswith("file:"):
        return None
    folder = Path(unquote(urlparse(url).path))
    return (
        folder if (folder / "pyproject.toml").exists() or (folder / "setup.py").exists() else None
    )


def local_sources(distribution: str, extras: list[str]) -> dict[str, Path]:
    """``{name: folder}`` of ``distribution`` and every dependency installed from a local folder.

    Dependencies are followed as pip would for ``distribution[extras]``: requirements whose marker
    does not hold (other extras, other platforms) are ignored.
    """
    from packaging.requirements import InvalidRequirement
    from packaging.requirements import Requirement

    found: dict[str, Path] = {}
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [(distribution, set(extras))]
    while todo:
        name, wanted_extras = todo.pop()
        key = canonical_name(name) + "[" + ",".join(sorted(wanted_extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = find_distribution(name)
        except PackageNotFoundError:
            continue
        folder = _local_folder(dist)
        if folder is None:
            continue  # from an index: pip fetches it (and its dependencies) as usual
        found[dist.metadata["Name"]] = folder
        for line in dist.requires or []:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in (wanted_extras | {""})
            ):
                continue
            todo.append((requirement.name, set(requirement.extras)))
    return found


def has_wheel(folder: Path, distribution: str, version: str) -> bool:
    """True if ``folder`` holds a wheel of ``distribution`` at ``version`` (as pip compares them)."""
    from packaging.utils import InvalidWheelFilename
    from packaging.utils import parse_wheel_filename

    wanted = (canonical_name(distribution), parse_version(version))
    for path in folder.glob("*.whl") if folder.is_dir() else ():
        with contextlib.suppress(InvalidWheelFilename):
            if parse_wheel_filename(path.name)[:2] == wanted:
                return True
    return False


def ensure_wheelhouse(
    folder: Path,
    distribution: str,
    version: str,
    extras: list[str],
    log: Callable[[str], None],
    *,
    required: bool = False,
) -> Path | None:
    """Make ``folder`` hold wheels of ``distribution[extras]==version`` and all it depends on.

    A folder that already holds a wheel of the distribution at that version is reused as it is.
    Returns None when there is nothing to build (the distribution was installed from an index,
    so pip can install it from there again), unless ``required`` (the caller named the folder).
    """
    if has_wheel(folder, distribution, version):
        log(f"reusing the wheelhouse {folder} (it has {distribution} {version})")
        return folder
    sources = local_sources(distribution, extras)
    if not sources:
        if required:
            raise WheelhouseError(
                f"{folder} has no wheel of {distribution} {version}, and {distribution} is not installed "
                "from a local folder that could be built into it"
            )
        log(
            f"{distribution} is installed from a package index: the tasks' venvs install it from pip's index"
        )
        return None
    folder.mkdir(parents=True, exist_ok=True)
    requirements = []
    for name, source in sources.items():
        same = canonical_name(name) == canonical_name(distribution)
        requirements.append(f"{source}[{','.join(extras)}]" if same and extras else str(source))
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(folder)]
    if importlib.util.find_spec("hatchling") is not None:  # build with it here: no download
        command.append("--no-build-isolation")
    command += requirements
    log(f"building wheels of {', '.join(sources)} and their dependencies into {folder}")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise WheelhouseError(
            f"pip wheel failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()}"
        )
    if not has_wheel(folder, distribution, version):
        built = ", ".join(sorted(path.name for path in folder.glob("*.whl")))
        raise WheelhouseError(
            f"pip wheel did not produce {distribution} {version} in {folder} (it has: {built})"
        )
    return folder
