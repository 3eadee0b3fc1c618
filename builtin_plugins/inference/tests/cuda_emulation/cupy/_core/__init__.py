"""``cupy._core`` of the CPU emulator: only the float32 compute-type switch."""
