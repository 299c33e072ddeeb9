"""Workflows of the example pipeline: every public module here holds Workflow objects.

``dkist-processing-core validate dkist_processing_example.workflows`` (or
``build_utils.validate_workflows(dkist_processing_example.workflows)`` in a test) finds them all.
"""
