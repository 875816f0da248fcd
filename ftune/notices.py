"""Library notices that ftune silences because the user did not cause them, each with its reason."""

from __future__ import annotations

import logging

# bitsandbytes logs at import, on CPUs with AVX512-BF16 when the optional `kernels` package is missing, that
# its faster 4-bit CPU kernel is unavailable. peft imports bitsandbytes whenever it is installed (and
# transformers imports peft, e.g. for get_scheduler), so every run printed it, quantisation asked for or
# not. ftune/__init__.py imports this module before either (it needs only logging, so `import ftune` stays
# light): the notice is dropped here, and let through by models.check_quantization when model.quantization is
# set, when it is about the user's run.
BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"


class _KernelsNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")


KERNELS_NOTICE = _KernelsNotice()
logging.getLogger(BNB_CPU_LOGGER).addFilter(KERNELS_NOTICE)
