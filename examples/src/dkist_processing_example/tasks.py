"""Tasks of the example pipeline.

This module needs only the task runtime (``dkist-processing-core-task``): it is what a worker imports.
``MyTask1``/``MyTask2`` are the seed README's example. The others form a miniature L0 -> L1
calibration: parse the inputs, five independent calibrations, apply them, write a quality report.
Every task writes its files under :func:`scratch_dir` and records when its work started and ended in
``timeline/<TaskName>.json`` (the runner's tests read those to check what ran in parallel).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from abc import abstractmethod
from pathlib import Path

from dkist_processing_core import TaskBase

from dkist_processing_example._scratch import read_json
from dkist_processing_example._scratch import scratch_dir
from dkist_processing_example._scratch import task_sleep
from dkist_processing_example._scratch import write_json

__all__ = [
    "DarkCalibration",
    "GainCalibration",
    "GeometricCalibration",
    "MyTask1",
    "MyTask2",
    "ParseL0Inputs",
    "PolarimetricCalibration",
    "QualityReport",
    "ScienceCalibration",
    "WavelengthCalibration",
]

logger = logging.getLogger(__name__)

FRAME_COUNT = 16
FRAME_SIZE = 64
FAIL_FIRST_ATTEMPT_VARIABLE = "DKIST_EXAMPLE_FAIL_FIRST_ATTEMPT"


# The seed README's example, verbatim.
class MyTask1(TaskBase):
    def run(self):
        print("Running MyTask1")


class MyTask2(TaskBase):
    def run(self):
        print("Running MyTask2")


class ExampleTaskBase(TaskBase):
    """A task of the L0 -> L1 example: does its work in :meth:`process` and records its timeline."""

    @property
    def scratch(self) -> Path:
        return scratch_dir(self.recipe_run_id)

    def run(self) -> None:
        started = time.time()
        self.process()
        write_json(
            self.scratch / "timeline" / f"{self.task_name}.json",
            {"task": self.task_name, "pid": os.getpid(), "start": started, "end": time.time()},
        )

    @abstractmethod
    def process(self) -> None:
        """The work of the task."""

    def read_frames(self, level: str) -> dict[str, list[float]]:
        folder = self.scratch / level
        frames = {path.stem: read_json(path) for path in sorted(folder.glob("*.json"))}
        if not frames:
            raise FileNotFoundError(f"no {level} frames in {folder}; did the upstream task run?")
        return frames


class ParseL0Inputs(ExampleTaskBase):
    """Make the synthetic L0 frames of this recipe run (a real pipeline would fetch them)."""

    def process(self) -> None:
        rng = random.Random(self.recipe_run_id)
        folder = self.scratch / "l0"
        with self.telemetry_span("Write L0 frames"):
            for index in range(FRAME_COUNT):
                frame = [
                    100.0 + 10.0 * math.sin((pixel + index) / 5.0) + rng.gauss(0.0, 1.0)
                    for pixel in range(FRAME_SIZE)
                ]
                write_json(folder / f"frame_{index:03d}.json", frame)
        logger.info("wrote %d L0 frames to %s", FRAME_COUNT, folder)
        print(f"{self.task_name}: {FRAME_COUNT} L0 frames in {folder}")


class CalibrationTask(ExampleTaskBase):
    """One of the independent calibrations: reads the L0 frames and writes one calibration file."""

    def process(self) -> None:
        frames = list(self.read_frames("l0").values())
        seconds = task_sleep()
        if seconds:
            time.sleep(seconds)
        value = self.calibrate(frames)
        path = write_json(self.scratch / "calibration" / f"{self.task_name}.json", value)
        logger.info("%s wrote %s", self.task_name, path)
        print(f"{self.task_name}: {path.name} = {value}")

    @abstractmethod
    def calibrate(self, frames: list[list[float]]) -> float: ...


class DarkCalibration(CalibrationTask):
    def calibrate(self, frames: list[list[float]]) -> float:
        return round(min(min(frame) for frame in frames), 6)


class GainCalibration(CalibrationTask):
    def calibrate(self, frames: list[list[float]]) -> float:
        mean = sum(sum(frame) for frame in frames) / (len(frames) * len(frames[0]))
        return round(mean, 6)


class GeometricCalibration(CalibrationTask):
    def calibrate(self, frames: list[list[float]]) -> float:
        peaks = [max(range(len(frame)), key=frame.__getitem__) for frame in frames]
        return round(sum(peaks) / len(peaks), 6)


class WavelengthCalibration(CalibrationTask):
    """Least-squares slope of the mean profile: a stand-in for a dispersion fit."""

    def calibrate(self, frames: list[list[float]]) -> float:
        profile = [sum(column) / len(column) for column in zip(*frames, strict=True)]
        n = len(profile)
        x_mean = (n - 1) / 2
        y_mean = sum(profile) / n
        numerator = sum((x - x_mean) * (y - y_mean) for x, y in enumerate(profile))
        denominator = sum((x - x_mean) ** 2 for x in range(n))
        return round(numerator / denominator, 6)


class PolarimetricCalibration(CalibrationTask):
    """Runs on the high-memory queue in production (see the workflow)."""

    def calibrate(self, frames: list[list[float]]) -> float:
        variance = [
            sum((value - sum(frame) / len(frame)) ** 2 for value in frame) / len(frame)
            for frame in frames
        ]
        return round(math.sqrt(sum(variance) / len(variance)), 6)


class ScienceCalibration(ExampleTaskBase):
    """Apply every calibration to the L0 frames and write the L1 frames (retried on failure).

    With ``DKIST_EXAMPLE_FAIL_FIRST_ATTEMPT=1`` the first attempt of a recipe run fails on purpose,
    to watch the retry happen.
    """

    retries = 2
    retry_delay_seconds = 1

    def process(self) -> None:
        self._maybe_fail_first_attempt()
        calibrations = {
            path.stem: read_json(path)
            for path in sorted((self.scratch / "calibration").glob("*.json"))
        }
        expected = {
            "DarkCalibration",
            "GainCalibration",
            "GeometricCalibration",
            "PolarimetricCalibration",
            "WavelengthCalibration",
        }
        missing = sorted(expected - set(calibrations))
        if missing:
            raise FileNotFoundError(f"calibrations missing: {', '.join(missing)}")
        dark = calibrations["DarkCalibration"]
        gain = calibrations["GainCalibration"] - dark or 1.0
        frames = self.read_frames("l0")
        with self.telemetry_span("Write L1 frames"):
            for name, frame in frames.items():
                write_json(
                    self.scratch / "l1" / f"{name}.json",
                    [round((v - dark) / gain, 6) for v in frame],
                )
        logger.info("calibrated %d frames", len(frames))
        print(f"{self.task_name}: {len(frames)} L1 frames in {self.scratch / 'l1'}")

    def _maybe_fail_first_attempt(self) -> None:
        if os.environ.get(FAIL_FIRST_ATTEMPT_VARIABLE) != "1":
            return
        marker = self.scratch / "science-first-attempt-failed"
        if not marker.exists():
            marker.touch()
            raise RuntimeError(
                f"failing the first attempt on purpose (${FAIL_FIRST_ATTEMPT_VARIABLE}=1)"
            )


class QualityReport(ExampleTaskBase):
    """Summarise the L1 frames in ``quality.json``."""

    def process(self) -> None:
        frames = self.read_frames("l1")
        values = [value for frame in frames.values() for value in frame]
        report = {
            "recipe_run_id": self.recipe_run_id,
            "workflow": f"{self.workflow_name} {self.workflow_version}",
            "frames": len(frames),
            "mean": round(sum(values) / len(values), 6),
            "min": min(values),
            "max": max(values),
        }
        path = write_json(self.scratch / "quality.json", report)
        logger.info("quality report %s", path)
        print(f"{self.task_name}: {path}")
