"""What a run shows: pictures and curves (plots), runs side by side (compare), TensorBoard events
(tensorboard).
"""

__all__ = ["plots", "compare", "tensorboard"]
