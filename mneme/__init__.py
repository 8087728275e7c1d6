"""Mneme: a private second memory for the desktop."""

import os

# Numpy's OpenBLAS would start a thread per core that spins after each small product (the capture
# loop does one per changed region): CPU burnt while waiting. Mneme's products are small; one thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# onnxruntime (1.2x+) queues telemetry events in ~/.cache/Microsoft/DeveloperTools/.onnxruntime/
# onnxruntime.db unless this is set before the library loads. Mneme sends no telemetry of any kind.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"
