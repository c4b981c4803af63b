"""Tests for the generated `rectangles` data (replay of the Lua source) and Bernoulli binarization."""

from __future__ import annotations

import numpy as np
import pytest

from jax_vae.common.data import datasets as data
from jax_vae.common.errors import DataError

# --- rectangles: the Lua source replayed draw for draw ----------------------------------------------


def mt19937_genrand_int32(seed: int):
    """Reference MT19937 (mt19937ar.c, as Lua torch's THRandom): init_genrand(seed), tempered draws."""
    mt = [seed & 0xFFFFFFFF]
    for j in range(1, 624):
        mt.append((1812433253 * (mt[-1] ^ (mt[-1] >> 30)) + j) & 0xFFFFFFFF)
    while True:
        for k in range(624):
            y = (mt[k] & 0x80000000) | (mt[(k + 1) % 624] & 0x7FFFFFFF)
            mt[k] = mt[(k + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
        for y in mt:
            y ^= y >> 11
            y ^= (y << 7) & 0x9D2C5680
            y ^= (y << 15) & 0xEFC60000
            yield y ^ (y >> 18)


@pytest.fixture(scope="module")
def rect_train():
    return data.load_split("rectangles", "train")


def test_rectangles_replays_lua_source_loop():
    """vae.lua: h=random(8,8); w=random(8,8); aH=random(1,H-h); aW=random(1,W-w); fill rows/cols a..a+8."""
    draws = mt19937_genrand_int32(1)
    assert next(mt19937_genrand_int32(1)) == 1791095845  # std::mt19937(1)() as well
    x, labels = data.make_rectangles(300, seed=1)
    for i in range(300):
        h = next(draws) % 1 + 8
        w = next(draws) % 1 + 8
        a_h = next(draws) % (24 - h) + 1  # 1-based, Lua random(1, H - h)
        a_w = next(draws) % (24 - w) + 1
        expected = np.zeros((24, 24), np.float32)
        expected[a_h - 1 : a_h + h, a_w - 1 : a_w + w] = 1  # Lua sub(aH, aH + h) is inclusive
        np.testing.assert_array_equal(x[i].reshape(24, 24), expected)
        assert labels[i] == (a_h - 1) * 24 + (a_w - 1)


def test_rectangles_each_a_9x9_square(rect_train):
    x, labels = rect_train
    assert x.shape == (50_000, 576) and x.dtype == np.float32 and labels.dtype == np.int64
    assert ((x == 0) | (x == 1)).all()
    np.testing.assert_array_equal(x.sum(axis=1), np.full(50_000, 81.0))
    top, left = labels // 24, labels % 24
    assert top.max() == left.max() == 15 and top.min() == left.min() == 0
    img = x.reshape(-1, 24, 24).astype(bool)
    rows, cols = img.any(axis=2), img.any(axis=1)  # [N, 24] each
    np.testing.assert_array_equal(rows.sum(1), 9)
    np.testing.assert_array_equal(cols.sum(1), 9)
    np.testing.assert_array_equal(rows.argmax(1), top)
    np.testing.assert_array_equal(cols.argmax(1), left)
    np.testing.assert_array_equal(img, rows[:, :, None] & cols[:, None, :])  # the full box is filled


def test_rectangles_positions_uniform(rect_train):
    _, labels = rect_train
    counts = np.bincount((labels // 24) * 16 + labels % 24, minlength=256)  # [256] positions
    expected = 50_000 / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 255 + 6 * np.sqrt(2 * 255), chi2  # 255 dof; ~6 sigma
    assert counts.min() > 130 and counts.max() < 270, (counts.min(), counts.max())


def test_rectangles_seeded(rect_train):
    x, labels = data.make_rectangles(1000, seed=1)
    np.testing.assert_array_equal(x, rect_train[0][:1000])
    x2, labels2 = data.make_rectangles(1000, seed=1)
    np.testing.assert_array_equal(labels, labels2)
    _, other = data.make_rectangles(1000, seed=7)
    assert (other != labels).mean() > 0.9
    x_test, y_test = data.load_split("rectangles", "test")
    assert x_test.shape == (10_000, 576) and (y_test[:1000] != labels).mean() > 0.9
    small, small_labels = data.make_rectangles(50, seed=3, size=10, square=4)
    assert small.shape == (50, 100) and (small.sum(1) == 16).all() and small_labels.max() <= 6 * 10 + 6
    with pytest.raises(ValueError, match="square <= size"):
        data.make_rectangles(5, size=8, square=9)


# --- binarization --------------------------------------------------------------------------------


def test_binarize_deterministic_and_unbiased():
    x = np.random.default_rng(1).random((400, 784), dtype=np.float32)  # [400, 784] grey
    b = data.binarize(x, seed=3)
    assert b.dtype == np.float32 and set(np.unique(b)) == {0.0, 1.0}
    np.testing.assert_array_equal(b, data.binarize(x, seed=3))
    assert (b != data.binarize(x, seed=4)).mean() > 0.3
    assert abs(float(b.mean()) - float(x.mean())) < 0.003  # std of the mean ~ 0.0008
    edges = data.binarize(np.array([0.0, 1.0, 0.0, 1.0], np.float32), seed=0)
    np.testing.assert_array_equal(edges, [0, 1, 0, 1])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        data.binarize(np.array([1.5]), seed=0)
