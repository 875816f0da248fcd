"""ftune: supervised fine-tuning of pretrained transformers, driven by Hydra configs."""

__version__ = "0.1.0"
