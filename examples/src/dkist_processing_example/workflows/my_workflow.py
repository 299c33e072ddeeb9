"""The seed README's usage example, as written there (the tasks live in ``tasks.py``)."""

from dkist_processing_core import Workflow

from dkist_processing_example.tasks import MyTask1
from dkist_processing_example.tasks import MyTask2

# Workflow definition
# MyTask1 -> MyTask2
w = Workflow(
    process_category="My",
    process_name="Workflow",
    workflow_package=__package__,
    workflow_version="dev",
)
w.add_node(MyTask1, upstreams=None)
w.add_node(MyTask2, upstreams=MyTask1)
