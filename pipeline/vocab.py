"""The shared vocabulary, as the library exposes it (defined in :mod:`edgecore.vocab`)."""

from edgecore.vocab import (
                            Activations,
                            Calibration,
                            Capability,
                            Choice,
                            ColorMode,
                            Kernels,
                            LayerStatus,
                            ModelFormat,
                            Preprocess,
                            Recipe,
                            Strategy,
                            Task,
                            Weights,
)

__all__ = ["Activations", "Calibration", "Capability", "Choice", "ColorMode", "Kernels", "LayerStatus",
           "ModelFormat", "Preprocess", "Recipe", "Strategy", "Task", "Weights"]
