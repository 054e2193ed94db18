"""Pretrained ImageNet weights by name: one import for the catalogue (:mod:`.catalogue`), finding or downloading a
file (:mod:`.locate`) and reading it (:mod:`.read`)."""
from __future__ import annotations

from .catalogue import WeightsEntry, available_weights, weights_names, weights_table_markdown
from .locate import (
    ETAG_TIMEOUT,
    HTTP_TIMEOUT,
    OFFLINE_ENV,
    WEIGHTS_DIR_ENV,
    ResolvedWeights,
    WeightsDownloadError,
    WeightsNotFoundError,
    hf_cache_dir,
    locate_weights,
    resolve_weights,
    user_cache_dir,
)
from .read import WeightsFileError, guess_key_format, read_weights_file

__all__ = [
    "WeightsEntry", "ResolvedWeights", "WeightsNotFoundError", "WeightsDownloadError", "WeightsFileError",
    "resolve_weights", "locate_weights", "read_weights_file", "available_weights", "weights_names",
    "weights_table_markdown", "guess_key_format", "user_cache_dir", "hf_cache_dir",
    "WEIGHTS_DIR_ENV", "OFFLINE_ENV", "ETAG_TIMEOUT", "HTTP_TIMEOUT",
]
