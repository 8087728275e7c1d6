"""Mneme: a private second memory for the desktop."""

import os

# Numpy's OpenBLAS would start a thread per core that spins after each small product (the capture
# loop does one per changed region): CPU burnt while waiting. Mneme's products are small; one thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
