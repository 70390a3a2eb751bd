"""Pretrained ImageNet weights by name: ``torchvision:NAME`` (``NAME.TAG`` for weights other than the default,
e.g. ``torchvision:resnet50.IMAGENET1K_V2``) and ``timm:NAME`` where timm is installed.

The weights come through the library's own cache, so a name works offline once its file has been fetched:
torchvision's in ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``), read from there when present and
downloaded there otherwise; timm's in the Hugging Face hub cache (``$HF_HOME``). A torchvision file is read with
``weights_only=True``, so nothing in it is executed. Each name brings what its weights were trained with: the
ImageNet class names (torchvision's ``weights.meta["categories"]``) and the preprocessing (resize, centre crop,
mean and std).
"""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from convscope.errors import UserError

PREFIXES = ("torchvision:", "timm:")
# torchvision's builders set these when they load weights (the weights expect them); weights=None leaves them off.
_BUILT_WITH_WEIGHTS: dict[str, dict[str, Any]] = {
    "googlenet": {"transform_input": True},
    "inception_v3": {"transform_input": True},
}


@dataclass
class Pretrained:
    """A named set of weights: its tensors, the classes it predicts and the preprocessing it was trained with."""

    spec: str  # as given, e.g. "torchvision:resnet18"
    weights: str  # which weights, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    source: str  # where they were read from (the cached file)
    state_dict: dict[str, torch.Tensor]
    categories: list[str]
    resize: int  # the shorter side is resized to this ...
    crop: int  # ... then the centre crop x crop is taken
    mean: list[float]
    std: list[float]
    interpolation: str
    build: Callable[[], nn.Module] = field(repr=False)  # the library's network with these weights, in eval mode

    @property
    def info(self) -> dict[str, Any]:
        """What a run directory's ``run.json`` records about its data, for these weights: inputs are brought to
        ``resize`` x ``resize`` (shorter side, then centre crop) before the ``crop`` centre crop."""
        return {
            "dataset": "imagenet",
            "weights": self.weights,
            "classes": self.categories,
            "channels": 3,
            "image_size": [self.resize, self.resize],
            "mean": self.mean,
            "std": self.std,
        }

    def preprocessing(self) -> str:
        """The preprocessing in words, for a ``note:``."""
        resampling = ""
        if self.interpolation != "bilinear":  # convscope's resize (data.images.fit_size) is bilinear
            resampling = f" (resized bilinearly; the weights were trained with {self.interpolation} resampling)"
        return (
            f"{self.spec} ({self.weights}): each image's shorter side resized to {self.resize} px, centre crop "
            f"{self.crop}x{self.crop}, normalised by the weights' mean {self.mean} and std {self.std}{resampling}"
        )


def is_pretrained_name(spec: object) -> bool:
    """Whether ``spec`` names pretrained weights (``torchvision:NAME``, ``timm:NAME``) rather than a path."""
    return isinstance(spec, str | Path) and str(spec).startswith(PREFIXES) and not Path(spec).exists()


def load_pretrained(spec: str) -> Pretrained:
    """The weights ``spec`` names, from the library's cache (downloaded into it when missing and a network
    exists); a UserError for an unknown name or weights neither cached nor downloadable."""
    library, _, name = spec.partition(":")
    if not name:
        raise UserError(f"{spec!r}: expected {library}:NAME, e.g. torchvision:resnet18")
    if library == "torchvision":
        return _torchvision(spec, name)
    if library == "timm":
        return _timm(spec, name)
    raise UserError(f"{spec!r}: expected torchvision:NAME or timm:NAME")


def classification_models() -> list[str]:
    """torchvision's ImageNet classifiers (not its detection, segmentation, video or quantized models)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _torchvision(spec: str, name: str) -> Pretrained:
    import torchvision

    architecture, _, tag = name.partition(".")
    known = classification_models()
    if architecture not in known:
        raise UserError(f"{spec!r}: torchvision has no ImageNet classifier {architecture!r}; "
                        f"expected one of: {', '.join(known)}")  # fmt: skip
    choices = torchvision.models.get_model_weights(architecture)
    if tag and tag not in choices.__members__:
        raise UserError(f"{spec!r}: {architecture} has no weights {tag!r}; expected one of: "
                        f"{', '.join(choices.__members__)}")  # fmt: skip
    weights = choices[tag] if tag else choices.DEFAULT
    state, cached = _cached_state_dict(spec, weights.url)
    transform = weights.transforms()
    categories = list(weights.meta["categories"])

    def build() -> nn.Module:
        options = {"weights": None, "num_classes": len(categories), **_BUILT_WITH_WEIGHTS.get(architecture, {})}
        try:  # on the meta device, then given the file's tensors (assign): no random initialisation to overwrite
            with torch.device("meta"):
                net = torchvision.models.get_model(architecture, **options)
        except (NotImplementedError, RuntimeError):  # a builder that reads tensor values (the RegNets)
            net = torchvision.models.get_model(architecture, **options)
        try:
            net.load_state_dict(state, assign=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[1:2] or [str(e)]
            raise UserError(f"{spec!r}: the cached file '{cached}' does not hold {architecture}'s weights "
                            f"({first[0].strip()[:160]}); delete it to download it again") from None  # fmt: skip
        return net.eval()

    return Pretrained(
        spec=spec,
        weights=f"{type(weights).__name__}.{weights.name}",
        source=str(cached),
        state_dict=state,
        categories=categories,
        resize=int(transform.resize_size[0]),
        crop=int(transform.crop_size[0]),
        mean=[float(v) for v in transform.mean],
        std=[float(v) for v in transform.std],
        interpolation=transform.interpolation.value,
        build=build,
    )


def _cached_state_dict(spec: str, url: str) -> tuple[dict[str, torch.Tensor], Path]:
    """The state dict at ``url`` through torch.hub's cache: read from ``<hub dir>/checkpoints/<file>`` when it is
    there, downloaded into it (hash checked) otherwise."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    cached = folder / Path(urlparse(url).path).name
    was_cached = cached.is_file()
    try:
        state = torch.hub.load_state_dict_from_url(url, model_dir=str(folder), map_location="cpu",
                                                   progress=sys.stderr.isatty(), check_hash=True,
                                                   weights_only=True)  # fmt: skip
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as e:
        reason = " ".join(str(e).split())[:160]
        if was_cached:
            raise UserError(f"{spec!r}: the cached file '{cached}' is not a readable state dict ({reason}); "
                            "delete it to download it again") from None  # fmt: skip
        raise UserError(
            f"{spec!r}: its weights are not in the cache and could not be downloaded ({reason}); place "
            f"{cached.name} (from {url}) in {folder} (set by TORCH_HOME) and run again"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{spec!r}: the cached file '{cached}' is not a state dict; delete it to download it again")
    return state, cached


def _hf_cache() -> str:
    """The Hugging Face hub cache folder timm reads (huggingface_hub is timm's own dependency)."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return "$HF_HOME/hub"
    return str(HF_HUB_CACHE)


def _timm(spec: str, name: str) -> Pretrained:
    try:
        import timm
        import timm.data
    except ImportError:
        raise UserError(
            f"{spec!r}: timm is not installed (pip install timm); torchvision:NAME needs nothing more"
        ) from None
    if not timm.is_model(name):  # the name with or without a weights tag (resnet50.a1_in1k)
        raise UserError(f"{spec!r}: timm has no model {name!r} (timm.list_models() lists them)")
    try:
        net = timm.create_model(name, pretrained=True)
    except (OSError, RuntimeError, ValueError) as e:  # huggingface_hub's offline and HTTP errors are OSErrors
        reason = " ".join(str(e).split())[:160]
        hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None) or name
        raise UserError(f"{spec!r}: its weights ({hub_id}) are neither in the Hugging Face cache ({_hf_cache()}, set "
                        f"by HF_HOME) nor downloadable ({reason})") from None  # fmt: skip
    config = timm.data.resolve_model_data_config(net)
    crop = int(config["input_size"][-1])
    subset = timm.data.infer_imagenet_subset(net)
    if subset:  # WordNet lemmas, "tench, Tinca tinca": the first, as torchvision names the classes
        categories = [lemmas.split(",")[0] for lemmas in timm.data.ImageNetInfo(subset).label_descriptions()]
    else:
        categories = [str(i) for i in range(net.num_classes)]
    cfg = net.pretrained_cfg
    return Pretrained(
        spec=spec,
        weights=f"{cfg.get('architecture', name)}.{cfg.get('tag', '')}".rstrip("."),
        source=str(cfg.get("hf_hub_id") or cfg.get("url") or "timm"),
        state_dict=net.state_dict(),
        categories=list(categories),
        resize=math.floor(crop / config["crop_pct"]),
        crop=crop,
        mean=[float(v) for v in config["mean"]],
        std=[float(v) for v in config["std"]],
        interpolation=str(config["interpolation"]),
        build=net.eval,
    )
