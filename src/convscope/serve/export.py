"""``convscope export``: a run's model as ONNX or TorchScript, checked against the eager model on real test data.

Both files take what the run's model takes (normalised N x C x H x W float images, or N x L int64 tokens for a
character CNN) with a free batch size, and return the class logits. What a caller needs to prepare inputs
(classes, mean and std, image size or vocabulary) travels inside the file: ONNX ``metadata_props`` key
``convscope``, TorchScript extra file ``convscope.json``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
ONNX_OPSET = 18
METADATA_KEY = "convscope"
PARITY_EXAMPLES = 256


@dataclass
class Export:
    path: Path
    format: str
    dataset: str
    examples: int  # test examples of the parity check
    max_abs_difference: float  # of the logits, eager against exported
    agreement: float  # share of examples whose predicted class is the same

    def describe(self) -> str:
        return (
            f"written {self.path} ({self.format}); parity on {self.examples} test examples of {self.dataset}: max abs "
            f"logit difference {self.max_abs_difference:.3g}, same predicted class for {self.agreement:.2%}"
        )


def parity_inputs(run: Any, count: int) -> torch.Tensor:
    """The first ``count`` inputs of the run's own test split, as the model takes them, on the CPU."""
    loader = run.modality.prepare(run.recipe).loaders(run.recipe, torch.device("cpu"))["test"]
    taken: list[torch.Tensor] = []
    for x, *_ in loader:  # (images, labels) or, for boxes, (images, boxes, labels)
        taken.append(x.contiguous())
        if sum(len(t) for t in taken) >= count:
            break
    return torch.cat(taken)[:count]


def metadata(run: Any) -> dict[str, Any]:
    keys = ("dataset", "classes", "channels", "image_size", "mean", "std", "vocabulary", "max_len", "preprocessing")
    return {"model": run.recipe.model.name, "task": run.recipe.task.name,
            **{k: run.info[k] for k in keys if k in run.info}}  # fmt: skip


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> None:
    """torch.export-based ONNX exporter, the batch dimension left free."""
    import onnx

    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        (example,),
        input_names=["inputs"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        opset_version=ONNX_OPSET,
        dynamo=True,
        verbose=False,
    )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, str(path))


def onnx_forward(path: Path) -> Any:
    """A function running the ONNX file with onnxruntime on the CPU: tensor in, logits tensor out."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> None:
    # PyTorch 2.14 deprecates TorchScript (a FutureWarning per call); the CLI says so once instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})


def load_torchscript(path: Path) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation, said once by the CLI
        return torch.jit.load(str(path), map_location="cpu").eval()
