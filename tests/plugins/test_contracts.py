"""A plug-in class that breaks its base's contract is refused when it is defined, not at its first use."""

import pytest

from ftune.peft_methods import PeftMethod
from ftune.tasks.base import TaskBase


def test_a_task_without_metrics_is_refused_at_definition():
    with pytest.raises(TypeError, match="NoMetrics must define compute_metrics or final_metrics"):
        type("NoMetrics", (TaskBase,), {})
    counted = type("Counted", (TaskBase,), {"final_metrics": lambda self, state: {"n": len(state["predictions"])}})
    assert counted().compute_metrics([1, 2], [{}, {}], [{}, {}]) == {"n": 2}  # the stream in one chunk


def test_a_peft_method_without_build_is_refused_at_definition():
    with pytest.raises(TypeError, match="PEFT method NoBuild must define the classmethod build"):
        type("NoBuild", (PeftMethod,), {})
