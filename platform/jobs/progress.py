"""How a job's overall progress (0..1) is laid out, shared by the worker that writes it and
the live page that reads it."""

from __future__ import annotations

# The slice of the job's progress that the engine run covers: fetching inputs comes before
# it, storing artifacts after it.
ENGINE_START, ENGINE_END = 0.05, 0.95

# Bounds on what a run may write into its row (a long job reports thousands of times).
MAX_LOG_LINES = 200
MAX_TIMELINE_SAMPLES = 300
# Between two writes of the same stage; a new stage is always written at once.
WRITE_INTERVAL_S = 1.0
