"""A plain `ftune train` prints no warning the user did not cause (issue 26: bitsandbytes' kernel notice,
printed by every run because peft imports bitsandbytes whenever it is installed)."""

import logging
import os
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow  # a train in a subprocess: make test, not make test-unit

# a logged warning ("12:00:00 WARNING ..."), a Python warning ("...: UserWarning: ..."), or a bare notice
WARNING = re.compile(r"\bWARNING\b|Warning:|warn", re.IGNORECASE)


def test_a_plain_train_prints_no_warning(tmp_path, tiny_model_dir, tiny_ner_data):
    # Python's own warning filters, as in a user's shell (pytest's filterwarnings do not reach a subprocess)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-m", "ftune", "train", f"model.name_or_path={tiny_model_dir}", "model.name=tiny",
         f"task.data.train={tiny_ner_data['train']}", f"task.data.validation={tiny_ner_data['validation']}",
         "trainer.max_steps=2", f"run_dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if WARNING.search(line)]
    assert not warnings, "\n".join(warnings)


def test_the_bitsandbytes_kernel_notice_is_dropped_unless_quantisation_is_asked_for():
    from ftune import models, notices

    notice = logging.LogRecord(notices.BNB_CPU_LOGGER, logging.WARNING, __file__, 1,
                               "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...",
                               ("No module named 'kernels'",), None)
    logger = logging.getLogger(notices.BNB_CPU_LOGGER)
    # `import ftune` installs the filter (a plain train's stderr shows it, test above); an earlier quantised test
    # in this worker may have lifted it, as a quantised run does, so the known state is set here
    logger.addFilter(models.KERNELS_NOTICE)
    try:
        assert not logger.filter(notice)
        other = logging.LogRecord(notices.BNB_CPU_LOGGER, logging.WARNING, __file__, 1, "something else", (), None)
        assert logger.filter(other)  # narrow: only that notice
        models.check_quantization(OmegaConf.create({"quantization": "nf4"}), "lora")
        assert logger.filter(notice)  # model.quantization set: the notice is about the user's run
    finally:
        logger.addFilter(models.KERNELS_NOTICE)
