"""ARM Linux boards (Raspberry Pi 4/5, arm64): on the device over SSH, emulated under QEMU, or
estimated from the fitted latency model. May import targets.host, the shared modules and edgecore."""
