"""The converter: exact round trips for every preset, clear errors naming the offending key."""

import jax
import numpy as np
import pytest
import torch

from jax_vae.common.config.presets import PRESETS
from jax_vae.common.errors import ConversionError
from jax_vae.common.weights import convert
from jax_vae.linen.models import init_weights
from parity_tests.sizes import parity_preset
from torch_reference.nn.models import init_params as torch_init


def test_round_trip_torch_flax_torch_is_exact(preset):
    cfg = parity_preset(preset)
    state = {k: v.numpy() for k, v in torch_init(0, cfg).state_dict().items()}
    back = convert.flax_to_torch(convert.torch_to_flax(state, cfg), cfg)
    assert list(back) == list(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and np.array_equal(back[k], state[k]), k


def test_round_trip_flax_torch_flax_is_exact(preset):
    cfg = parity_preset(preset)
    params = jax.device_get(init_weights(jax.random.key(0), cfg))  # BatchNorm: running statistics too
    state = {k: torch.from_numpy(v) for k, v in convert.flax_to_torch(params, cfg).items()}
    torch_model = torch_init(0, cfg)
    torch_model.load_state_dict(state)  # strict: every key and shape accepted by torch
    again = convert.torch_to_flax(torch_model.state_dict(), cfg)
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves_with_path(again)
    ):
        assert np.array_equal(np.asarray(a), b), path


def test_errors_name_the_key():
    cfg = PRESETS["pytorch-examples"]
    state = {k: v.numpy() for k, v in torch_init(0, cfg).state_dict().items()}
    bad_shape = dict(state, **{"decoder.out.weight": np.zeros((784, 21), np.float32)})
    with pytest.raises(ConversionError, match=r"decoder\.out\.weight.*\(784, 21\)"):
        convert.torch_to_flax(bad_shape, cfg)
    missing = {k: v for k, v in state.items() if k != "encoder.logvar.bias"}
    with pytest.raises(ConversionError, match=r"missing key 'encoder\.logvar\.bias'"):
        convert.torch_to_flax(missing, cfg)
    extra = dict(state, **{"encoder.hidden_9.weight": np.zeros((1, 1))})
    with pytest.raises(ConversionError, match=r"unexpected key 'encoder\.hidden_9\.weight'"):
        convert.torch_to_flax(extra, cfg)
    params = convert.torch_to_flax(state, cfg)
    with pytest.raises(ConversionError, match="preset 'minimalist'"):
        convert.flax_to_torch(params, PRESETS["minimalist"])  # 400 hidden units vs 500
