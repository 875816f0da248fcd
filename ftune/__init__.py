"""ftune: supervised fine-tuning of pretrained transformers, driven by Hydra configs."""

__version__ = "0.1.0"

# before any command imports peft (which imports bitsandbytes): models.py installs the filter that keeps
# bitsandbytes' import-time kernel notice out of runs that asked for no quantisation
from ftune import models as _models  # noqa: E402, F401
