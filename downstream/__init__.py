"""Downstream tasks: one module per task, each registering its class with
``@register_task(name)``; the registry imports them on first lookup."""

from downstream.base import Task, build_task, registered_tasks, task_from_config

__all__ = ["Task", "build_task", "registered_tasks", "task_from_config"]
