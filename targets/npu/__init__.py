"""Arm Ethos-U NPUs: Vela compiles the int8 model in a subprocess and its compiler estimates give the op
split, SRAM, flash and cycles; fallback ops are priced by the board CPU's cycle model; TFLM runs the
pre-Vela model for accuracy. May import targets.mcu, targets.host, the shared modules and edgecore."""
