"""Label-uniform sampling and inverse-frequency class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data.sampling import class_weights, uniform_label_sampler


def test_imbalanced_set_is_sampled_uniformly_per_label():
    labels = [1] * 1000 + [0] * 100 + [2] * 100 + [-1] * 50
    draws = np.array(list(uniform_label_sampler(labels, 30000, seed=1)))
    drawn = np.array(labels)[draws]
    assert (drawn >= 0).all()  # unknown labels excluded by default
    freq = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(freq, 1 / 3, atol=0.015)
    # within a label, items are drawn roughly evenly too
    neutral_counts = np.bincount(draws[drawn == 1], minlength=1000)[:1000]
    assert neutral_counts.min() >= 1


def test_unknown_as_group_and_epochs_differ():
    labels = [1] * 900 + [0] * 90 + [None] * 10
    sampler = uniform_label_sampler(labels, 30000, seed=0, unknown="group")
    first = np.array(list(sampler))
    second = np.array(list(sampler))
    assert not np.array_equal(first, second)
    assert len(first) == len(sampler) == 30000
    is_unknown = first >= 990
    assert is_unknown.mean() == pytest.approx(1 / 3, abs=0.015)
    again = np.array(list(uniform_label_sampler(labels, 30000, seed=0, unknown="group")))
    assert np.array_equal(first, again)


def test_sampler_rejects_no_known_labels():
    with pytest.raises(ValueError):
        uniform_label_sampler([-1, None], 10)


def test_class_weights_are_inverse_frequency():
    w = class_weights([1] * 10 + [0] * 1 + [2] * 1)
    # 1/count = (1, 0.1, 1), mean 0.7 -> (1/0.7, 0.1/0.7, 1/0.7)
    assert torch.allclose(w, torch.tensor([1 / 0.7, 0.1 / 0.7, 1 / 0.7]), atol=1e-6)
    assert float(w.mean()) == pytest.approx(1.0)


def test_absent_class_gets_zero_weight():
    w = class_weights([0, 0, 0, 1, -1, None])
    # present: 1/3 and 1 -> mean 2/3
    assert torch.allclose(w, torch.tensor([0.5, 1.5, 0.0]), atol=1e-6)
    assert torch.equal(class_weights([-1]), torch.zeros(3))
