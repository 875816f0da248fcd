"""One module per `ftune <command>`, each with `run(cfg) -> dict`, which tests and notebooks can call too."""

from __future__ import annotations


def quiet_libraries() -> None:
    """transformers' per-file progress bars and init warnings drown ftune's own output."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # peft's save_pretrained asks transformers a deprecated question on every checkpoint
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
