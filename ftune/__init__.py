"""ftune: supervised fine-tuning of pretrained transformers, driven by Hydra configs."""

__version__ = "0.1.0"

# before any command imports peft (which imports bitsandbytes): the filter that keeps bitsandbytes'
# import-time kernel notice out of runs that asked for no quantisation
from ftune import notices as _notices  # noqa: E402, F401
