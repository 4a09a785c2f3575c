import math

import numpy as np
import pytest
import torch

from glamor_model.models.video import TemporalSoftmaxPool
from glamor_model.pooling import pool, temporal_softmax_pool


def test_temporal_softmax_pooling_against_a_hand_computed_example():
    # two frames, two classes; beta = ln 2 makes the weights easy: exp(beta * s) = 2 ** s
    scores = np.array([[1.0, 0.0], [3.0, 2.0]])
    beta = math.log(2)
    # class 0: weights 2^1 : 2^3 = 2 : 8 -> 0.2, 0.8 -> S0 = 0.2 * 1 + 0.8 * 3 = 2.6
    # class 1: weights 2^0 : 2^2 = 1 : 4 -> 0.2, 0.8 -> S1 = 0.2 * 0 + 0.8 * 2 = 1.6
    np.testing.assert_allclose(pool(scores, "softmax", beta), [2.6, 1.6])


def test_beta_zero_is_mean_and_large_beta_approaches_max():
    rng = np.random.default_rng(0)
    scores = rng.random((9, 4))
    np.testing.assert_allclose(pool(scores, "softmax", 0.0), scores.mean(0))
    np.testing.assert_allclose(pool(scores, "softmax", 1e-6), scores.mean(0), atol=1e-6)
    assert np.abs(pool(scores, "softmax", 1e4) - scores.max(0)).max() < 1e-3
    # in between, the pooled score lies between mean and max
    mid = pool(scores, "softmax", 3.0)
    assert (mid >= scores.mean(0) - 1e-12).all() and (mid <= scores.max(0) + 1e-12).all()


def test_masked_frames_do_not_count():
    scores = torch.tensor([[[0.2, 0.8], [0.9, 0.1], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(temporal_softmax_pool(scores, 2.0, mask),
                               temporal_softmax_pool(scores[:, :2], 2.0))
    np.testing.assert_allclose(temporal_softmax_pool(scores.numpy(), 2.0, mask.numpy()),
                               temporal_softmax_pool(scores[:, :2], 2.0).numpy(), rtol=1e-6)


def test_learned_beta_gets_gradients():
    module = TemporalSoftmaxPool(beta=1.0)
    scores = torch.tensor([[[0.9, 0.1], [0.2, 0.8]]])
    module(scores)[0, 0].backward()
    assert module.beta.grad is not None and module.beta.grad.abs() > 0


@pytest.mark.parametrize("how", ["mean", "max", "softmax"])
def test_pool_shapes(how):
    assert pool(np.ones((5, 7)), how).shape == (7,)


def test_learned_temporal_softmax_pooling_beats_mean_pooling_when_most_frames_look_neutral(tmp_path):
    """2 of 8 frames per clip show the class; the other 6 show class "a", as neutral frames fill
    most clips of every emotion. Mean pooling can only separate such clips by a narrow margin
    (docs/video.md); temporal softmax pooling weights the few confident frames.

    Two generated datasets (3 classes, chance 1/3), each trained with both poolings."""
    from glamor_model.engine.config import TrainConfig
    from glamor_model.engine.loop import train
    from glamor_model.eval.evaluate import evaluate_run
    from learnability import make_clip_dataset

    accuracy = {"video-tsp": [], "video-mean": []}
    for seed in (0, 1):
        data = make_clip_dataset(tmp_path / f"clips{seed}", {"train": 40, "val": 10, "test": 20}, frames=8,
                                 expressive=2, seed=seed, filler="neutral")
        for model in accuracy:
            config = TrainConfig(data=str(data), out=str(tmp_path / f"{model}{seed}"), model=model, epochs=20,
                                 lr=0.03, milestones=(14,), batch_size=8, frames=8, face_size=32,
                                 cache_dir=str(tmp_path / "cache"))
            train(config)
            results = evaluate_run(config.out, checkpoint="last", cache_dir=config.cache_dir)
            assert results["unit"] == "clip"
            if model == "video-tsp":
                assert results["learned_beta"] != 5.0
            accuracy[model].append(results["accuracy"])
    tsp, mean = np.mean(accuracy["video-tsp"]), np.mean(accuracy["video-mean"])
    # measured: video-tsp 0.68 and 0.85, video-mean 0.55 and 0.40
    assert tsp >= 0.7 and tsp >= mean + 0.15, accuracy
