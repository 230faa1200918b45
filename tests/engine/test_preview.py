"""latent2rgb: the latent -> RGB projection with each family's published factors.

The expected pixels are written out, not recomputed: a unit latent in channel c lights the pixel
(factor[c] + bias + 1) * 127.5, from AUTOMATIC1111's / ComfyUI's factor tables for SD 1.x and
SDXL. A wrong factor, a swapped row, a missing bias or the wrong family's table fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spatiora_tui.engine.previews.latent2rgb import latent_to_rgb

UNIT_PIXELS = {
    "sd1": [(172, 156, 168), (168, 190, 157), (91, 149, 162), (100, 94, 35)],
    "sd2": [(172, 156, 168), (168, 190, 157), (91, 149, 162), (100, 94, 35)],
    "sdxl": [(187, 179, 182), (109, 124, 140), (155, 139, 122), (100, 93, 99)],
}


@pytest.mark.parametrize("family", sorted(UNIT_PIXELS))
def test_each_channel_lights_its_published_colour(family: str) -> None:
    for channel, expected in enumerate(UNIT_PIXELS[family]):
        latent = torch.zeros(1, 4, 2, 3)
        latent[0, channel] = 1.0
        image = latent_to_rgb(latent, family)
        assert image.size == (3, 2) and image.mode == "RGB"
        got = np.asarray(image)
        assert (np.abs(got.astype(int) - np.array(expected)) <= 1).all(), (family, channel, got[0, 0])


def test_the_projection_is_linear_around_grey() -> None:
    a, b = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(0)) * 0.3

    def centred(x: torch.Tensor) -> np.ndarray:
        return np.asarray(latent_to_rgb(x, "sdxl")).astype(float) - np.asarray(
            latent_to_rgb(torch.zeros(4, 5, 7), "sdxl")
        )

    assert np.abs(centred(a + b) - (centred(a) + centred(b))).max() <= 2


def test_a_pixel_is_placed_where_its_latent_cell_is() -> None:
    latent = torch.zeros(4, 2, 3)
    latent[3, 1, 2] = 1.0  # bottom right
    pixels = np.asarray(latent_to_rgb(latent, "sd1"))
    assert tuple(pixels[1, 2]) == (100, 94, 35) and tuple(pixels[0, 0]) == (127, 127, 127)


def test_unit_channel_maps_to_its_row() -> None:
    latent = torch.zeros(4, 2, 2)
    latent[3] = 1.0  # channel 4 of SD 1.x is strongly negative in blue
    r, g, b = np.asarray(latent_to_rgb(latent, "sd1"))[0, 0]
    assert b < g < r < 127


def test_wrong_channel_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="16 channels"):
        latent_to_rgb(torch.zeros(16, 2, 2), "sd1")
