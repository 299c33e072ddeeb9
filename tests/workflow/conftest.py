"""Fixtures of the workflow tests: throw-away pipeline packages, Airflow homes and a wheelhouse.

Every test writes its pipeline package (unique name) under its own ``tmp_path``. Airflow runs of
exported DAGs (``dag.test()``) happen in a subprocess with its own AIRFLOW_HOME, a copy of a
database migrated once per xdist worker, so tests stay independent under ``pytest -n auto``.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest
from helpers.release import REPO_ROOT
from helpers.release import build_once
from helpers.release import build_wheel
from helpers.worker_script import worker_path

FIXTURES = Path(__file__).parent / "fixtures"
RUN_DAG_TEST = FIXTURES / "run_dag_test.py"


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


@pytest.fixture(scope="session")
def core_wheelhouse(shared_tmp: Path) -> Path:
    """Wheels of core-telemetry and core-task (built from this checkout) and all their dependencies.

    The dependencies come from this machine's package index or mirror, once per session; the
    worker venvs of the DAG runs then install with PIP_NO_INDEX=1 from this folder alone.
    """

    def produce(folder: Path) -> None:
        wheels = [
            build_wheel(REPO_ROOT / "packages" / name, folder)
            for name in ("core-telemetry", "core-task")
        ]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--only-binary=:all:",
                "--dest",
                str(folder),
                *map(str, wheels),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, (
            "could not download the dependencies of dkist-processing-core-task for the offline "
            f"wheelhouse (needs the package index once):\n{result.stdout}{result.stderr}"
        )

    return build_once(shared_tmp, "workflow-core-wheelhouse", produce)


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow SQLite metadata database after ``airflow db migrate``, once per xdist worker."""
    home = tmp_path_factory.mktemp("airflow-migrated")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    airflow = Path(sys.executable).with_name("airflow")
    result = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout}{result.stderr}"
    database = home / "airflow.db"
    assert database.is_file(), f"airflow db migrate made no {database}"
    return database


@dataclass
class DagRunResult:
    state: str
    run_id: str
    tasks: dict[str, str]
    output: str


@pytest.fixture
def run_dag(tmp_path: Path, migrated_airflow_db: Path) -> Callable[..., DagRunResult]:
    """Run an exported DAG with ``dag.test(run_conf=...)`` in a subprocess with its own AIRFLOW_HOME.

    ``run(dag_file, conf)`` returns one DagRunResult; ``run(dag_file, [conf, ...])`` runs the DAG
    once per conf in the same process and returns a list.
    """

    def run(
        dag_file: Path,
        conf: dict | list[dict],
        env: dict[str, str] | None = None,
        timeout: float = 900,
    ) -> DagRunResult | list[DagRunResult]:
        home = tmp_path / f"airflow-home-{uuid.uuid4().hex[:8]}"
        home.mkdir()
        shutil.copyfile(migrated_airflow_db, home / "airflow.db")
        temporary = tmp_path / "tmp"
        temporary.mkdir(exist_ok=True)
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PIP_", "AIRFLOW"))
        }
        environment.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(dag_file.parent),
            # python3 in the task script is this interpreter; its venvs are built from it. No uv
            # on this worker unless a test asks for it (env={"PATH": worker_path(..., "uv")}).
            PATH=worker_path(home / "worker-bin", "pip"),
            TMPDIR=str(temporary),
            PIP_CONFIG_FILE=os.devnull,
        )
        environment.update(env or {})
        dag_id = dag_file.stem
        confs = conf if isinstance(conf, list) else [conf]
        result = subprocess.run(
            [sys.executable, str(RUN_DAG_TEST), str(dag_file.parent), dag_id, json.dumps(confs)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = result.stdout + result.stderr
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        assert len(lines) == len(confs), (
            f"dag.test() of {dag_id} did not finish (exit {result.returncode}):\n{output[-20000:]}"
        )
        results = []
        for line in lines:
            data = json.loads(line.removeprefix("RESULT "))
            results.append(
                DagRunResult(
                    state=data["state"], run_id=data["run_id"], tasks=data["tasks"], output=output
                )
            )
        return results if isinstance(conf, list) else results[0]

    return run


@pytest.fixture(scope="session")
def example_wheelhouse(shared_tmp: Path) -> Path:
    """The example pipeline at 1.0.0 and 2.0.0 with core-task and every dependency, for offline installs."""
    from helpers.worker_script import build_example_wheelhouse

    return build_once(shared_tmp, "worker-example-wheelhouse", build_example_wheelhouse)
