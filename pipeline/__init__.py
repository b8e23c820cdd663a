"""edgepipe: which int8 model do I ship, and will it work on my device?

The library API lives in :mod:`pipeline.api`; importing this package does not import TensorFlow.
"""

__version__ = "0.1.0"
