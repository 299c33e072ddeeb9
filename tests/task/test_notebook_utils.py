"""notebook_utils: the previous product's helpers for tasks run in a notebook (nbformat/nbconvert from the notebook extra)."""

from __future__ import annotations

import threading
import time

import nbformat
import pytest
from dkist_processing_core.notebook_utils import export_notebook_by_path
from dkist_processing_core.notebook_utils import wait_for_notebook_save
from helpers.task_modules import clean_environment
from helpers.task_modules import run_python


def _write_notebook(path, marker="calibrated 12 frames"):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Manual processing of recipe run 42"),
        nbformat.v4.new_code_cell(
            "print('hello')",
            execution_count=1,
            outputs=[nbformat.v4.new_output("stream", name="stdout", text=marker)],
        ),
    ]
    nbformat.write(notebook, path)


def test_export_returns_the_notebook_as_markdown_bytes(tmp_path):
    source = tmp_path / "l0_to_l1_visp.ipynb"
    _write_notebook(source)
    exported = export_notebook_by_path(source)
    assert isinstance(exported, bytes)
    text = exported.decode("utf-8")
    assert text.startswith("# Manual processing of recipe run 42")
    assert "print('hello')" in text
    assert "calibrated 12 frames" in text
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "l0_to_l1_visp.ipynb"
    ]  # nothing written


def test_export_of_a_missing_notebook_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ipynb"):
        export_notebook_by_path(tmp_path / "missing.ipynb")


def test_wait_prints_the_sentinel_and_returns_once_the_file_holds_it(tmp_path, capsys):
    path = tmp_path / "run.ipynb"
    _write_notebook(path, marker="before the save")

    def save_later():
        # What a Jupyter frontend does: save the notebook with the cell's printed output in it.
        time.sleep(0.3)
        _write_notebook(path, marker="Waiting for notebook to save with sentinel 'abc123'...")

    saver = threading.Thread(target=save_later)
    saver.start()
    try:
        assert wait_for_notebook_save(path, sentinel="abc123", attempts=100, delay_s=0.05) is None
    finally:
        saver.join()
    assert capsys.readouterr().out == "Waiting for notebook to save with sentinel 'abc123'...\n"


def test_wait_with_a_random_sentinel_times_out_naming_the_file(tmp_path, capsys):
    path = tmp_path / "run.ipynb"
    _write_notebook(path)
    began = time.monotonic()
    with pytest.raises(
        TimeoutError, match=r"Notebook did not save updated outputs in time: '.*run.ipynb'"
    ):
        wait_for_notebook_save(path, attempts=3, delay_s=0.1)
    assert 0.15 < time.monotonic() - began  # 3 attempts, 2 pauses
    printed = capsys.readouterr().out
    assert printed.startswith("Waiting for notebook to save with sentinel '") and len(printed) > 60


def test_wait_counts_a_missing_file_as_not_saved(tmp_path):
    with pytest.raises(TimeoutError, match="never.ipynb"):
        wait_for_notebook_save(tmp_path / "never.ipynb", sentinel="x", attempts=2, delay_s=0)


@pytest.mark.parametrize(("attempts", "delay_s"), [(0, 1), (True, 1), (3, -1), (3, 1e9)])
def test_wait_refuses_nonsense_limits(tmp_path, attempts, delay_s):
    with pytest.raises(ValueError, match="attempts|delay_s"):
        wait_for_notebook_save(tmp_path / "run.ipynb", attempts=attempts, delay_s=delay_s)


def test_without_the_notebook_extra_export_names_it(tmp_path):
    code = """
import sys

class HideNotebookLibraries:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nbformat", "nbconvert"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideNotebookLibraries())
from dkist_processing_core.notebook_utils import export_notebook_by_path
try:
    export_notebook_by_path("x.ipynb")
except ImportError as error:
    print(error)
"""
    result = run_python(code, clean_environment())
    assert result.returncode == 0, result.stderr
    assert "pip install 'dkist-processing-core-task[notebook]'" in result.stdout
