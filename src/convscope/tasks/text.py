"""Text classification: classify's loss, metrics and predictions over batches of character tokens."""

from __future__ import annotations

from convscope.tasks.classify import ClassifyTask


class TextTask(ClassifyTask):
    """A batch is ``(tokens N x L int64, labels)``; the model returns class logits."""

    name = "text"
    modality = "text"
