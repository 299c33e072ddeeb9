"""Fixtures of the workflow tests: throw-away pipeline packages and DAG runs.

Every test writes its pipeline package (unique name) under its own ``tmp_path``. Airflow runs of
exported DAGs (``dag.test()``, :mod:`helpers.dag_runs`) happen in a subprocess with its own
AIRFLOW_HOME, a copy of a database migrated once, so tests stay independent under ``pytest -n auto``.
The wheelhouse of the DAG runs is ``example_wheelhouse`` (:mod:`helpers.wheelhouse`).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import textwrap
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest
from helpers.dag_runs import DagRun
from helpers.dag_runs import airflow_home
from helpers.dag_runs import run_dag as run_dag_test
from helpers.worker_script import worker_path

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _airflow_home_for_in_process_imports(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """Airflow imported in the test process (DagBag, Workflow.load) must not write to ~/airflow."""
    saved = {
        name: os.environ.get(name) for name in ("AIRFLOW_HOME", "AIRFLOW__CORE__LOAD_EXAMPLES")
    }
    if not saved["AIRFLOW_HOME"]:
        os.environ["AIRFLOW_HOME"] = str(tmp_path_factory.mktemp("airflow-home-in-process"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _clean_build_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose BUILD_VERSION themselves; the shell's value must not leak in."""
    monkeypatch.delenv("BUILD_VERSION", raising=False)


@dataclass
class Pipeline:
    """A pipeline package written under tmp_path and importable in the test process."""

    package: str
    project_dir: Path
    version: str
    modules: list[str] = field(default_factory=list)

    @property
    def distribution(self) -> str:
        return self.package.replace("_", "-")

    @property
    def source_dir(self) -> Path:
        return self.project_dir / "src" / self.package

    def write_module(self, name: str, source: str) -> str:
        """Write ``<package>/<name>.py`` and return its dotted module name."""
        (self.source_dir / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        importlib.invalidate_caches()
        module = f"{self.package}.{name}"
        self.modules.append(module)
        return module

    def import_module(self, name: str):
        return importlib.import_module(f"{self.package}.{name}")

    @property
    def tasks(self):
        return self.import_module("tasks")


@pytest.fixture
def make_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Pipeline]]:
    """Factory of pipeline packages with the tasks of fixtures/pipeline_tasks.py as ``<package>.tasks``."""
    created: list[Pipeline] = []

    def make(version: str = "1.0.0", package: str | None = None) -> Pipeline:
        package = package or f"wf_pipe_{uuid.uuid4().hex[:10]}"
        project_dir = tmp_path / f"project-{package}"
        source_dir = project_dir / "src" / package
        source_dir.mkdir(parents=True)
        (source_dir / "__init__.py").write_text(
            '"""Throw-away pipeline of the workflow tests."""\n'
        )
        shutil.copyfile(FIXTURES / "pipeline_tasks.py", source_dir / "tasks.py")
        (project_dir / "pyproject.toml").write_text(
            textwrap.dedent(
                f"""\
                [build-system]
                requires = ["hatchling"]
                build-backend = "hatchling.build"

                [project]
                name = "{package.replace("_", "-")}"
                version = "{version}"
                requires-python = ">=3.11"
                dependencies = ["dkist-processing-core-task"]

                [tool.hatch.build.targets.wheel]
                packages = ["src/{package}"]
                """
            )
        )
        monkeypatch.syspath_prepend(str(project_dir / "src"))
        importlib.invalidate_caches()
        pipeline = Pipeline(package=package, project_dir=project_dir, version=version)
        created.append(pipeline)
        return pipeline

    yield make
    for pipeline in created:
        for name in [
            name
            for name in sys.modules
            if name == pipeline.package or name.startswith(pipeline.package + ".")
        ]:
            del sys.modules[name]


@pytest.fixture
def pipeline(make_pipeline: Callable[..., Pipeline]) -> Pipeline:
    return make_pipeline()


@pytest.fixture
def run_dag(tmp_path: Path, migrated_airflow_db: Path) -> Callable[..., DagRun | list[DagRun]]:
    """Run an exported DAG with ``dag.test(run_conf=...)`` (:func:`helpers.dag_runs.run_dag`) in a
    fresh AIRFLOW_HOME, as a worker without uv whose pip sees no configuration of this machine.

    ``run(dag_file, conf)`` returns one DagRun; ``run(dag_file, [conf, ...])`` runs the DAG once per
    conf in the same process and returns a list.
    """

    def run(
        dag_file: Path,
        conf: dict | list[dict],
        env: dict[str, str] | None = None,
        timeout: float = 900,
    ) -> DagRun | list[DagRun]:
        home = airflow_home(tmp_path / f"airflow-home-{uuid.uuid4().hex[:8]}", migrated_airflow_db)
        temporary = tmp_path / "tmp"
        temporary.mkdir(exist_ok=True)
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PIP_", "AIRFLOW"))
        }
        environment.update(
            # python3 in the task script is this interpreter; its venvs are built from it. No uv
            # on this worker unless a test asks for it (env={"PATH": worker_path(..., "uv")}).
            PATH=worker_path(home / "worker-bin", "pip"),
            TMPDIR=str(temporary),
            PIP_CONFIG_FILE=os.devnull,
        )
        environment.update(env or {})
        confs = conf if isinstance(conf, list) else [conf]
        runs = run_dag_test(
            home, dag_file.parent, dag_file.stem, confs, environment, timeout=timeout
        )
        return runs if isinstance(conf, list) else runs[0]

    return run
