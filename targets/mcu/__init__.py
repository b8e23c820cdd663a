"""Microcontrollers: TensorFlow Lite Micro runs in isolated workers, the abort pre-flight, the
verified arena and fit verdict, the deploy bundle. May import targets.host, the shared modules and edgecore."""
