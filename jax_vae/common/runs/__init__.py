"""Run folders: the layout, config.json, metrics.jsonl and the summary (folder), the run lock (lock),
and which checkpoint step is intact and read (checkpoint_steps), for both frameworks.
"""

__all__ = ["folder", "lock", "checkpoint_steps"]
