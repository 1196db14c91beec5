"""The task types; ``conf/task/*.yaml`` name them as ``_target_``."""

from mmbert.downstream.tasks.base import Splits, Task
from mmbert.downstream.tasks.classify import ClassifyTask
from mmbert.downstream.tasks.qa import QaTask
from mmbert.downstream.tasks.retrieve import RetrieveTask
from mmbert.downstream.tasks.tag import TagTask

__all__ = ["ClassifyTask", "QaTask", "RetrieveTask", "Splits", "TagTask", "Task"]
