"""L0 -> L1 calibration: the data form of a workflow, with a fan-out/fan-in.

::

    ParseL0Inputs -> DarkCalibration ----------+
                  -> GainCalibration ----------+
                  -> GeometricCalibration -----+-> ScienceCalibration -> QualityReport
                  -> WavelengthCalibration ----+
                  -> PolarimetricCalibration --+   (high_memory queue)

The version comes from ``BUILD_VERSION`` (default ``dev``), as in a pipeline's CI build.
"""

from dkist_processing_core import ResourceQueue
from dkist_processing_core import Workflow

from dkist_processing_example.tasks import DarkCalibration
from dkist_processing_example.tasks import GainCalibration
from dkist_processing_example.tasks import GeometricCalibration
from dkist_processing_example.tasks import ParseL0Inputs
from dkist_processing_example.tasks import PolarimetricCalibration
from dkist_processing_example.tasks import QualityReport
from dkist_processing_example.tasks import ScienceCalibration
from dkist_processing_example.tasks import WavelengthCalibration

CALIBRATIONS = [DarkCalibration, GainCalibration, GeometricCalibration, WavelengthCalibration]

l0_to_l1 = Workflow(
    input_data="l0",
    output_data="l1",
    category="example",
    workflow_package=__package__,
    tags=["example"],
)
l0_to_l1.add_node(task=ParseL0Inputs)
for calibration in CALIBRATIONS:
    l0_to_l1.add_node(task=calibration, upstreams=ParseL0Inputs)
l0_to_l1.add_node(
    task=PolarimetricCalibration,
    upstreams=ParseL0Inputs,
    resource_queue=ResourceQueue.HIGH_MEMORY,
)
l0_to_l1.add_node(task=ScienceCalibration, upstreams=[*CALIBRATIONS, PolarimetricCalibration])
l0_to_l1.add_node(task=QualityReport, upstreams=ScienceCalibration)
