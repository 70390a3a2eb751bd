"""Pretrained weights for tests, offline: a randomly initialised torchvision network's state dict placed where
torch.hub's cache keeps the real file, and downloads refused so that nothing reaches the network."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import pytest
import torch
import torchvision


def place_torchvision_weights(torch_home: Path, architecture: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """Save a random ``architecture`` state dict as ``$TORCH_HOME/hub/checkpoints/<its default weights' file>``."""
    url = torchvision.models.get_model_weights(architecture).DEFAULT.url
    path = torch_home / "hub" / "checkpoints" / Path(urlparse(url).path).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    state = torchvision.models.get_model(architecture, weights=None).state_dict()
    torch.save(state, path)
    return path, state


def offline(monkeypatch: pytest.MonkeyPatch, torch_home: Path) -> None:
    """Point torch.hub's cache at ``torch_home`` and make every download fail as it does without a network."""

    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
