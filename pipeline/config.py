"""The run configuration, as the library exposes it (defined in :mod:`pipeline.core.config`)."""

from pipeline.core.config import DEFAULT_CALIB_SAMPLES, ConvertConfig, PreprocessOverrides, QatOptions

__all__ = ["ConvertConfig", "DEFAULT_CALIB_SAMPLES", "PreprocessOverrides", "QatOptions"]
