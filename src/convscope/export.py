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

from convscope.errors import UserError
from convscope.inference import InferenceConfig, batched

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
    for x, _ in loader:
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


def export_run(
    run_dir: str | Path, fmt: str, out: str | Path | None = None, *, examples: int = PARITY_EXAMPLES
) -> Export:
    """Write the run's model as ``fmt`` (``onnx`` or ``torchscript``) to ``out`` (default ``RUN_DIR/model.onnx``
    or ``RUN_DIR/model.torchscript.pt``) and compare its logits with the eager model's on test examples."""
    from convscope import api

    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is not one of: {', '.join(FORMATS)}")
    run = api.load_run(run_dir, device="cpu")
    path = Path(out) if out is not None else run.run_dir / FORMATS[fmt]
    if path.is_dir():
        raise UserError(f"--out '{path}' is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = run.model.float().eval()  # fp32, contiguous: the graph every runtime can take
    x = parity_inputs(run, examples)
    meta = metadata(run)
    # Two examples: a batch of one lets the exporters specialise the batch dimension.
    example = x[:2] if len(x) >= 2 else torch.cat([x, x])
    if fmt == "onnx":
        export_onnx(model, example, path, meta)
        exported = onnx_forward(path)
    else:
        export_torchscript(model, example, path, meta)
        exported = load_torchscript(path)
    config = InferenceConfig(fold_batchnorm=False, batch_size=128)
    device = torch.device("cpu")
    eager = batched(model, x, config, device)
    other = batched(exported, x, config, device)
    return Export(
        path=path,
        format=fmt,
        dataset=run.info["dataset"],
        examples=len(x),
        max_abs_difference=(eager - other).abs().max().item() if len(x) else 0.0,
        agreement=(eager.argmax(1) == other.argmax(1)).float().mean().item() if len(x) else 1.0,
    )
