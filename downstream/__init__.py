"""Downstream tasks. Importing this package registers every built-in task."""

from downstream import asr, asv, er, ic, ks, pr, qbe, sd, sf, sid, text  # noqa: F401
from downstream.base import Task, build_task, registered_tasks

__all__ = ["Task", "build_task", "registered_tasks"]
