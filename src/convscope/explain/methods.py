"""Explanation methods by name (captum's pattern: ``Method(model).attribute(x, target)``).

Every attribution method returns one map per image, B x H x W at the input's resolution, so figures and
trust measures treat them alike. ``feature-maps`` is the odd one: seed 004's figure of what each layer
computes, not a map per pixel.
"""

from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass

import captum.attr
import torch
import torch.nn.functional as F
from torch import nn

from convscope.errors import UserError
from convscope.explain.hooks import guided_gates, inplace_off
from convscope.registry import Registry

_CAPTUM_EXPECTED = r"(Input Tensor \d+ did not already require gradients|Setting backward hooks on ReLU)"


class AttributionMethod(ABC):
    """Maps of how much each pixel counts for a target class; ``notes`` says what the user should know."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.notes: list[str] = []

    def attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``x`` N x C x H x W (model-ready), ``target`` N class indices -> N x H x W maps.

        Images are independent: a batch gives the same maps as one call per image.
        """
        with inplace_off(self.model), warnings.catch_warnings():
            # captum warns that it switches on the input's gradient and that it hooks ReLUs: both expected here.
            warnings.filterwarnings("ignore", message=_CAPTUM_EXPECTED, category=UserWarning)
            return self._attribute(x, target).detach()

    @abstractmethod
    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


METHODS: Registry[type] = Registry("explanation method")


@METHODS.register("saliency")
class Saliency(AttributionMethod):
    """Simonyan et al. 2014: the absolute input gradient of the class score, maximum over channels."""

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return captum.attr.Saliency(self.model).attribute(x, target=target, abs=True).amax(dim=1)


@METHODS.register("guided-backprop")
class GuidedBackprop(AttributionMethod):
    """Springenberg et al. 2015 (seed 004): gradients through ReLUs kept only where positive, maximum over channels.

    captum's GuidedBackprop overrides nn.ReLU modules only; other activations (GELU, SELU, ...) get the same
    rule from :func:`convscope.explain.hooks.guided_gates`, or the map would silently be the plain gradient.
    """

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with guided_gates(self.model) as gated:
            if gated:
                self.notes = [
                    f"guided backprop: captum overrides only ReLU; the guided rule (gradient kept where it and the "
                    f"activation are positive) is applied to {', '.join(gated)} by convscope"
                ]
            maps = captum.attr.GuidedBackprop(self.model).attribute(x, target=target)
        return maps.amax(dim=1)


@METHODS.register("gradcam")
class GradCam(AttributionMethod):
    """Selvaraju et al. 2017: a layer's activations weighted by their average gradient, ReLU, upsampled.

    The layer defaults to the last convolution of the model's body (``features``); ``layer`` names another.
    """

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        super().__init__(model)
        self.layer_name, self.layer = find_layer(model, layer)
        how = "chosen with --layer" if layer else "the last convolution of the body; --layer NAME picks another"
        self.notes = [f"gradcam layer: {self.layer_name} ({self.layer}), {how}"]

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cam = captum.attr.LayerGradCam(self.model, self.layer).attribute(x, target=target, relu_attributions=True)
        if cam.dim() != 4:
            raise UserError(f"gradcam layer {self.layer_name!r} does not produce N x C x H x W maps; pick a conv layer")
        return captum.attr.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear").sum(dim=1)


@METHODS.register("integrated-gradients")
class IntegratedGradients(AttributionMethod):
    """Sundararajan et al. 2017: gradients along the straight path from ``baseline`` to the image, summed over
    channels. ``internal_batch_size`` bounds memory (captum #245): the path's steps go through the model in
    chunks of that many images."""

    def __init__(
        self,
        model: nn.Module,
        baseline: torch.Tensor | float = 0.0,
        steps: int = 50,
        internal_batch_size: int = 64,
    ) -> None:
        super().__init__(model)
        self.baseline, self.steps, self.internal_batch_size = baseline, steps, internal_batch_size

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        baseline = self.baseline
        if isinstance(baseline, torch.Tensor):
            baseline = baseline.to(x.device, x.dtype).expand_as(x).contiguous()
        maps = captum.attr.IntegratedGradients(self.model).attribute(
            x, baselines=baseline, target=target, n_steps=self.steps, internal_batch_size=self.internal_batch_size
        )
        return maps.sum(dim=1)


@METHODS.register("attention")
class Attention(AttributionMethod):
    """Seed 000: a weakly supervised model's own class map, the target class's logit at each location upsampled
    to the image, through a sigmoid. Needs a model that returns N x C x H x W class maps."""

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            maps = self.model(x)
        if maps.dim() != 4:
            raise UserError(
                "method 'attention' does not apply to this run: its model returns class scores "
                f"({' x '.join(map(str, maps.shape))}), not class maps (N x C x H x W) as a weakly supervised "
                "run's does; for a classification run use gradcam, saliency, guided-backprop or integrated-gradients"
            )
        chosen = maps[torch.arange(len(target), device=maps.device), target].unsqueeze(1).float()
        # Upsampled as logits, then squashed: seed 000's model upsamples its maps before the sigmoid.
        return F.interpolate(chosen, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0].sigmoid()


@dataclass
class Stage:
    """One layer's output for one image, in forward order."""

    name: str  # the module's name in the model, e.g. "features.3"
    kind: str  # its type, e.g. "Conv2d"
    output: torch.Tensor  # C x h x w maps, or a vector


# Layers whose output only reshapes or, in evaluation, repeats their input: nothing new to show.
_PASS_THROUGH = (nn.Flatten, nn.Dropout, nn.Identity)


@METHODS.register("feature-maps")
class FeatureMaps:
    """Seed 004's figure: the output of every top-level layer of the body and of the head, in order."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.notes: list[str] = []

    def stages(self, x: torch.Tensor) -> list[Stage]:
        """The layers' outputs for the single image ``x`` (1 x C x H x W)."""
        if _is_convnet(self.model):
            layers = []
            for part_name in ("features", "head"):
                part = getattr(self.model, part_name)
                children = [(f"{part_name}.{n}", m) for n, m in part.named_children()]
                layers += children or [(part_name, part)]  # a part that is one layer is one stage
        else:
            layers = list(self.model.named_children())
        outputs: dict[str, torch.Tensor] = {}

        def keep(name: str):
            return lambda module, inputs, output: outputs.__setitem__(name, output.detach()[0])

        handles = [m.register_forward_hook(keep(n)) for n, m in layers if not isinstance(m, _PASS_THROUGH)]
        try:
            with torch.no_grad():
                self.model(x[:1])
        finally:
            for handle in handles:
                handle.remove()
        kinds = dict(layers)
        return [Stage(name, type(kinds[name]).__name__, out) for name, out in outputs.items()]


def _is_convnet(model: nn.Module) -> bool:
    return all(isinstance(getattr(model, part, None), nn.Module) for part in ("features", "head"))


def find_layer(model: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    """``name``'s module, or by default the last Conv2d of the model's body (``features``), else of the model."""
    modules = dict(model.named_modules())
    convolutions = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    if name is not None:
        if name not in modules or name == "":
            shown = ", ".join(convolutions) or "none"
            raise UserError(f"the model has no layer {name!r}; its convolutions: {shown} (any name of named_modules())")
        return name, modules[name]
    body = [n for n in convolutions if n.startswith("features.")] or convolutions
    if not body:
        raise UserError("the model has no Conv2d layer for gradcam; name one with --layer")
    return body[-1], modules[body[-1]]


def method_names() -> list[str]:
    return METHODS.names()


def create_method(
    name: str, model: nn.Module, *, layer: str | None = None, baseline: torch.Tensor | None = None
) -> AttributionMethod | FeatureMaps:
    """Method ``name`` for ``model``. ``layer`` (Grad-CAM's) is an error for a method without one; ``baseline``
    (the input that means "nothing", e.g. a black image) goes to the methods that take one."""
    params = inspect.signature(METHODS.get(name)).parameters
    options: dict = {}
    if layer is not None:
        if "layer" not in params:  # said in the command line's words rather than as a constructor option
            raise UserError(f"--layer applies to gradcam only; method {name!r} takes no layer")
        options["layer"] = layer
    if baseline is not None and "baseline" in params:
        options["baseline"] = baseline
    return METHODS.create(name, options, model=model)


def black_baseline(mean: list[float], std: list[float]) -> torch.Tensor:
    """A black image after the run's normalisation, 1 x C x 1 x 1: what integrated gradients starts from and
    what deletion puts in place of removed pixels."""
    mean_t, std_t = torch.tensor(mean), torch.tensor(std)
    return (-mean_t / std_t).view(1, -1, 1, 1)
