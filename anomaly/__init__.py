"""humwatch anomaly core: front end, audio input, simulator, model, training, scoring, evaluation."""

import os

__version__ = "0.1.0"

# Idle OpenMP threads sleep instead of spin-waiting. With two torch threads on two cores shared with other work (an
# edge gateway, a CI runner), spinning made training ~10x slower than one thread (measured: 42 s vs 3.4 s for the
# same epoch with other jobs running; 3.4 s with PASSIVE). libgomp reads this when torch is first imported, so it
# must be set before that; every humwatch module imports torch lazily, after this package. Set the variable
# yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
