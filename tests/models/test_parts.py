"""The model parts (jax_vae.common.config.parts): every VAEConfig field belongs to one part, and the
tables each implementation builds a VAE from cover every kind a config can name."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from jax_vae import losses as jax_losses
from jax_vae.common.config.parts import PART_FIELDS, model_parts, part_fields
from jax_vae.common.config.presets import PRESETS
from jax_vae.common.config.vae_config import VAEConfig, enum_fields
from jax_vae.linen import models as linen_models
from jax_vae.nnx import models as nnx_models
from torch_reference import losses as torch_losses
from torch_reference.nn import models as torch_models


def test_every_config_field_belongs_to_exactly_one_part():
    fields = [f.name for f in dataclasses.fields(VAEConfig)]
    owned = [name for names in PART_FIELDS.values() for name in names]
    assert sorted(owned) == sorted(fields), f"unowned {set(fields) - set(owned)}, twice or stale: {owned}"


@pytest.mark.parametrize(
    "field,tables",
    [
        ("arch", [linen_models.NETWORKS, nnx_models.NETWORKS, torch_models.NETWORKS]),
        ("likelihood", [jax_losses.LIKELIHOODS, torch_losses.LIKELIHOODS]),
        ("kl", [jax_losses.KL_TERMS, torch_losses.KL_TERMS]),
        ("objective", [jax_losses.OBJECTIVES, torch_losses.OBJECTIVES]),
    ],
)
def test_each_part_table_has_every_kind_the_config_allows(field, tables):
    kinds = set(enum_fields()[field])
    for table in tables:
        assert set(table) == kinds, f"{field}: {sorted(set(table) ^ kinds)}"


def test_the_networks_of_the_three_implementations_have_the_same_class_names():
    names = [
        {kind: (enc.__name__, dec.__name__) for kind, (enc, dec) in t.items()}
        for t in (linen_models.NETWORKS, nnx_models.NETWORKS, torch_models.NETWORKS)
    ]
    assert names[0] == names[1] == names[2]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_model_parts_of_each_preset(preset):
    cfg = PRESETS[preset]
    parts = model_parts(cfg)
    assert (parts.network, parts.likelihood, parts.objective) == (cfg.arch, cfg.likelihood, cfg.objective)
    assert parts.posterior in ("gaussian_logvar", "gaussian_sigma") and parts.prior == "standard_normal"
    assert part_fields(cfg, "posterior") == {"encoder_head": cfg.encoder_head, "scale_param": cfg.scale_param}
    assert typing.get_args(typing.get_type_hints(VAEConfig)["arch"]) == tuple(linen_models.NETWORKS)
