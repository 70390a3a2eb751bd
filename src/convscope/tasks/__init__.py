"""Learning problems by name: a recipe's ``[task] name`` picks one."""

from convscope.registry import Registry
from convscope.tasks.base import Task

TASKS: Registry[Task] = Registry("task")

# Registration happens on import; keep this import after TASKS exists.
from convscope.tasks import classify, segment, splitbrain, text, weakseg  # noqa: E402, F401

__all__ = ["TASKS", "Task"]
