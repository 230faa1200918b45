"""Latent -> RGB preview projection with the per-family factors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spatiora_tui.engine.preview import latent_to_rgb

SD1 = np.array([[.3512, .2297, .3227], [.3250, .4974, .2350], [-.2829, .1762, .2721], [-.2120, -.2616, -.7177]])
SDXL = np.array([[.3651, .4232, .4341], [-.2533, -.0042, .1068], [.1076, .1111, -.0362], [-.3165, -.2492, -.2188]])
SDXL_BIAS = np.array([.1084, -.0175, -.0011])


def expected(latent: np.ndarray, factors: np.ndarray, bias: np.ndarray) -> np.ndarray:
    rgb = np.einsum("chw,cr->hwr", latent, factors) + bias
    return np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("family", "factors", "bias"), [
    ("sd1", SD1, np.zeros(3)), ("sd2", SD1, np.zeros(3)), ("sdxl", SDXL, SDXL_BIAS),
])
def test_projection_uses_the_family_factors(family: str, factors: np.ndarray, bias: np.ndarray) -> None:
    latent = torch.randn(1, 4, 6, 10, generator=torch.Generator().manual_seed(0))
    image = latent_to_rgb(latent, family)
    assert image.size == (10, 6) and image.mode == "RGB"
    got = np.asarray(image).astype(int)
    assert np.abs(got - expected(latent[0].numpy(), factors, bias).astype(int)).max() <= 1


def test_unit_channel_maps_to_its_row() -> None:
    latent = torch.zeros(4, 2, 2)
    latent[3] = 1.0  # channel 4 of SD 1.x is strongly negative in blue
    r, g, b = np.asarray(latent_to_rgb(latent, "sd1"))[0, 0]
    assert b < g < r < 127


def test_wrong_channel_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="16 channels"):
        latent_to_rgb(torch.zeros(16, 2, 2), "sd1")
