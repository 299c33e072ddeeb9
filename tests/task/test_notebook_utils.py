"""notebook_utils: waiting for a saved notebook and exporting it (nbformat/nbconvert from the notebook extra)."""

from __future__ import annotations

import os
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


def test_export_to_html_next_to_the_notebook(tmp_path):
    source = tmp_path / "l0_to_l1_visp.ipynb"
    _write_notebook(source)
    target = export_notebook_by_path(source)
    assert target == tmp_path / "l0_to_l1_visp.html"
    html = target.read_text()
    assert "<html" in html and "Manual processing of recipe run 42" in html and "calibrated 12 frames" in html


def test_export_to_another_format_and_place(tmp_path):
    source = tmp_path / "run.ipynb"
    _write_notebook(source)
    target = export_notebook_by_path(str(source), output_format="markdown", output_path=tmp_path / "out" / "run.md")
    assert target == tmp_path / "out" / "run.md"
    assert "# Manual processing of recipe run 42" in target.read_text()


def test_export_refuses_unknown_formats_and_missing_files(tmp_path):
    source = tmp_path / "run.ipynb"
    _write_notebook(source)
    with pytest.raises(ValueError, match="unknown notebook export format 'docx'"):
        export_notebook_by_path(source, output_format="docx")
    with pytest.raises(FileNotFoundError, match="missing.ipynb"):
        export_notebook_by_path(tmp_path / "missing.ipynb")
    with pytest.raises(ValueError, match="would overwrite the notebook itself"):
        export_notebook_by_path(source, output_format="notebook", output_path=source)


def test_wait_returns_once_the_file_is_saved_and_settled(tmp_path):
    path = tmp_path / "run.ipynb"
    began = time.time()

    def save_later():
        time.sleep(0.3)
        path.write_text("{ half written")  # a frontend mid-save
        time.sleep(0.3)
        _write_notebook(path)

    saver = threading.Thread(target=save_later)
    saver.start()
    try:
        result = wait_for_notebook_save(path, saved_after=began, timeout=30, settle_seconds=0.5, poll_interval=0.05)
    finally:
        saver.join()
    assert result == path
    assert nbformat.read(path, as_version=4).cells[0].source == "# Manual processing of recipe run 42"


def test_wait_ignores_a_save_from_before(tmp_path):
    path = tmp_path / "run.ipynb"
    _write_notebook(path)
    old = time.time() - 60
    os.utime(path, (old, old))
    with pytest.raises(TimeoutError, match="was not saved since the wait began"):
        wait_for_notebook_save(path, saved_after=time.time(), timeout=0.3, settle_seconds=0, poll_interval=0.05)


def test_wait_times_out_naming_the_file(tmp_path):
    with pytest.raises(TimeoutError, match=r"never.ipynb' does not exist after waiting 0.2 s"):
        wait_for_notebook_save(tmp_path / "never.ipynb", timeout=0.2, poll_interval=0.05)


def test_wait_defaults_to_the_notebook_of_the_kernel(tmp_path, monkeypatch):
    path = tmp_path / "kernel.ipynb"
    _write_notebook(path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    assert wait_for_notebook_save(timeout=10, settle_seconds=0) == path
    monkeypatch.delenv("JPY_SESSION_NAME")
    with pytest.raises(ValueError, match="pass notebook_path"):
        wait_for_notebook_save(timeout=1)


def test_without_the_notebook_extra_the_error_names_it(tmp_path):
    code = """
import sys

class HideNotebookLibraries:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nbformat", "nbconvert"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideNotebookLibraries())
from dkist_processing_core.notebook_utils import export_notebook_by_path, wait_for_notebook_save
for call in (lambda: export_notebook_by_path("x.ipynb"), lambda: wait_for_notebook_save("x.ipynb", timeout=0)):
    try:
        call()
    except ImportError as error:
        print(error)
"""
    result = run_python(code, clean_environment())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "pip install 'dkist-processing-core-task[notebook]'" in line
