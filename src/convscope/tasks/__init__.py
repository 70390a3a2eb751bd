"""Learning problems by name, one module each: a recipe's ``[task] name`` picks a row of :data:`TASKS`.

Adding a task: a module here with a subclass of :class:`convscope.engine.task.Task`, and its row below.
"""

from convscope.engine.task import Task
from convscope.registry import Registry
from convscope.tasks.classify import ClassifyTask
from convscope.tasks.detect import DetectTask
from convscope.tasks.segment import SegmentTask
from convscope.tasks.splitbrain import SplitBrainClassifyTask, SplitBrainTask
from convscope.tasks.text import TextTask
from convscope.tasks.weakseg import WeakSegTask

TASKS: Registry[Task] = Registry("task")
for _name, _cls in (
    ("classify", ClassifyTask),
    ("detect", DetectTask),
    ("segment", SegmentTask),
    ("splitbrain", SplitBrainTask),
    ("splitbrain-finetune", SplitBrainClassifyTask),
    ("text", TextTask),
    ("weakseg", WeakSegTask),
):
    TASKS.register(_name)(_cls)

__all__ = ["TASKS", "Task"]
