"""Faster Hydra compositions inside the test processes (the suite composes about a thousand times).

Each composition (Hydra 1.3) re-reads and re-parses every YAML file of ftune's config tree and deep-copies the
whole ConfigStore with its 45 schemas: about 100 of its 230 ms here. Inside a test process neither can change
(the package's configs are installed files; the schemas are registered once), so the parsed files are kept
and the ConfigStore is shared instead of copied (Hydra copies it on every load anyway: ConfigStore.load).
The composed configs are unchanged (tests/config/test_compose.py compares them with plain Hydra's); the
commands the tests start as subprocesses run plain Hydra, as users do.
"""

from __future__ import annotations

import contextlib
import copy

from hydra._internal.config_repository import CachingConfigRepository
from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource
from hydra.core.config_store import ConfigStore
from hydra.plugins.config_source import ConfigResult

_PLAIN = (CachingConfigRepository.__init__, ImportlibResourcesConfigSource.load_config)
_parsed: dict[tuple[str, str], ConfigResult] = {}


def _repository_sharing_the_store(self, delegate) -> None:
    store = ConfigStore.instance()
    self.delegate = copy.deepcopy(delegate, {id(store): store})  # Hydra: copy.deepcopy(delegate)
    self.cache = {}


def _parsed_once(self, config_path: str) -> ConfigResult:
    key = (self.path, config_path)
    if key not in _parsed:
        _parsed[key] = _PLAIN[1](self, config_path)
    kept = _parsed[key]
    # a fresh copy each time: Hydra edits what it loads (it takes the defaults list out of it)
    return ConfigResult(provider=kept.provider, path=kept.path, config=copy.deepcopy(kept.config),
                        header=dict(kept.header), is_schema_source=kept.is_schema_source)


def install() -> None:
    CachingConfigRepository.__init__ = _repository_sharing_the_store
    ImportlibResourcesConfigSource.load_config = _parsed_once


@contextlib.contextmanager
def plain_hydra():
    """Hydra as it ships, inside the block."""
    fast = (CachingConfigRepository.__init__, ImportlibResourcesConfigSource.load_config)
    CachingConfigRepository.__init__, ImportlibResourcesConfigSource.load_config = _PLAIN
    try:
        yield
    finally:
        CachingConfigRepository.__init__, ImportlibResourcesConfigSource.load_config = fast
