"""The demo model's training data and its scorer: captions say what the images show, and the
scorer reads it back from held-out images (clean and degraded as a small model's are)."""

from __future__ import annotations

import random

import numpy as np

from spatiora_tui.procedural import scorer
from spatiora_tui.procedural.scenes import CAPTION_WORDS, KINDS, Scene, draw, random_scene, samples


def test_the_same_seed_draws_the_same_images_and_captions() -> None:
    first, second = samples(6, seed=5), samples(6, seed=5)
    for (a, cap_a, kind_a, _), (b, cap_b, kind_b, _) in zip(first, second):
        assert cap_a == cap_b and kind_a == kind_b
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert [kind for _, _, kind, _ in first] == list(KINDS) * 3
    assert not np.array_equal(np.asarray(samples(1, seed=6)[0][0]), np.asarray(first[0][0]))


def test_a_caption_holds_only_the_vocabulary_words() -> None:
    rng = random.Random(0)
    for _ in range(200):
        caption = random_scene(rng).caption()
        words = caption.replace(":", " ").replace(",", " ").replace("-", " ").split()
        assert set(words) <= set(CAPTION_WORDS), caption


def test_the_kind_classifier_is_right_on_held_out_images() -> None:
    model = scorer.kind_model()
    assert scorer.held_out_accuracy(model) >= 0.98
    plan, room = (draw(Scene(3, "bedroom", "oak", "blue", "left"), kind, random.Random(1)) for kind in KINDS)
    assert model.kind(plan) == "plan" and model.kind(room) == "room"
    assert model.kind(plan.resize((256, 256))) == "plan"  # any size: read at 64x64


def test_wall_colours_are_read_back_from_rooms() -> None:
    rng = random.Random(9)
    rooms = [(image, scene) for image, _, _, scene in samples(120, seed=11, kinds=("room",))]
    clean = np.mean([scorer.wall_colour(image) == scene.wall for image, scene in rooms])
    degraded = np.mean([scorer.wall_colour(scorer.degrade(image, rng)) == scene.wall for image, scene in rooms])
    assert clean >= 0.95 and degraded >= 0.9, (clean, degraded)


def test_room_counts_follow_the_caption() -> None:
    plans = [(image, scene) for image, _, _, scene in samples(200, seed=12, kinds=("plan",))]
    counts = {n: [scorer.room_count(image) for image, scene in plans if scene.rooms == n] for n in range(2, 7)}
    exact = np.mean([scorer.room_count(image) == scene.rooms for image, scene in plans])
    assert exact >= 0.6, exact
    means = [np.mean(counts[n]) for n in range(2, 7)]
    assert means == sorted(means) and means[-1] - means[0] >= 2, means  # more rooms asked, more counted
