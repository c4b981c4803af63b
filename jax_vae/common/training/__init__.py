"""The one training path of both frameworks: the plan of chunks, data order and RNG streams (plan),
a run's data and initial weights (inputs), step records and the progress bar (progress), and the loop
itself (loop.train).
"""

__all__ = ["plan", "inputs", "progress", "loop"]
