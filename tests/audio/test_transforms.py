"""Random transforms: per-example draws, application masks, config blocks."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from omegaconf import OmegaConf

from vcmr.audio import dsp as D
from vcmr.audio import transforms as T
from vcmr.config import ConfigError

from .test_dsp import SR, gen, rms, sine


def test_probability_zero_and_one():
    x = torch.randn(16, 1, 4000, generator=gen(5))
    never = T.RandomGain(0.0, -10.0, -1.0)
    assert torch.equal(never(x, gen(0)), x)
    always = T.RandomPolarity(1.0)
    assert torch.equal(always(x, gen(0)), -x)
    y, params = T.RandomGain(1.0, -10.0, -1.0).forward_with_params(x, gen(0))
    assert params["apply"].all()
    torch.testing.assert_close(20 * torch.log10(rms(y) / rms(x)), params["db"], atol=1e-4, rtol=0)


def test_partial_probability_touches_only_selected_examples():
    x = torch.randn(64, 1, 2000, generator=gen(6))
    y, params = T.RandomFilter(0.5, SR, 0.5, 2, 2200, 4000, 200, 1200).forward_with_params(x, gen(1))
    mask = params["apply"]
    assert 0 < mask.sum() < 64
    assert torch.equal(y[~mask], x[~mask])
    assert not torch.isclose(y[mask], x[mask]).all(dim=-1).any()
    cut = params["cutoff_hz"]
    hp = params["highpass"]
    assert ((cut[hp] >= 200) & (cut[hp] <= 1200)).all() and ((cut[~hp] >= 2200) & (cut[~hp] <= 4000)).all()


def test_per_example_independent_draws():
    x = sine(440.0, 0.5).repeat(8, 1, 1)
    y, params = T.RandomGain(1.0, -20.0, -1.0).forward_with_params(x, gen(0))
    assert len(set(params["db"].tolist())) == 8
    assert len({round(v, 6) for v in rms(y).tolist()}) == 8


def test_random_delay_and_pitch_draw_from_grids():
    d = T.RandomDelay(1.0, SR, 200, 500, 50, 0.5)
    assert d.delays_ms == [200.0, 250.0, 300.0, 350.0, 400.0, 450.0, 500.0]
    _, params = d.forward_with_params(torch.zeros(32, 1, SR), gen(0))
    assert set(params["delay_ms"].tolist()) <= set(d.delays_ms)
    torch.testing.assert_close(params["delay_samples"], (params["delay_ms"] * 16).long())
    ps = T.RandomPitchShift(1.0, -2, 2, 1, 256, 64)
    assert ps.semitones == [-2.0, -1.0, 1.0, 2.0]


def test_scaling_transforms_match_functional_and_leave_others_bitwise():
    x = torch.randn(16, 1, 1000, generator=gen(14))
    y, params = T.RandomGain(0.5, -20.0, -1.0).forward_with_params(x, gen(2))
    m = params["apply"]
    assert 0 < m.sum() < 16
    assert torch.equal(y[~m], x[~m])
    assert torch.equal(y[m], D.gain(x[m], params["db"][m]))
    z, params = T.RandomPolarity(0.5).forward_with_params(x, gen(3))
    m = params["apply"]
    assert torch.equal(z[m], -x[m]) and torch.equal(z[~m], x[~m])


def test_random_reverb_uses_drawn_parameters():
    x = torch.zeros(4, 1, 8000)
    x[..., 0] = 1.0
    t = T.RandomReverb(1.0, SR, 0.2, 0.4, 1.0, 1.0, 0.5, rt60_steps=11, irs_per_rt60=2, bank_seed=0)
    y, params = t.forward_with_params(x, gen(0))
    assert ((params["rt60_s"] >= 0.2) & (params["rt60_s"] <= 0.4)).all()
    # wet = 1: the output is the (unit-energy) impulse response itself.
    torch.testing.assert_close(y.pow(2).sum(-1).view(-1), torch.ones(4), atol=1e-4, rtol=0)


def test_config_fields_are_the_constructor_arguments():
    for name, cls in T.TRANSFORMS.items():
        args = set(inspect.signature(cls.__init__).parameters) - {"self", "sample_rate"}
        assert {f.name for f in dataclasses.fields(cls.Config)} == args, name


def test_from_config_passes_the_block_and_sample_rate():
    block = {"p": 0.3, "min_ms": 200.0, "max_ms": 300.0, "step_ms": 50.0, "volume": 0.5}
    d = T.RandomDelay.from_config(OmegaConf.create(block), SR)
    assert (d.p, d.sample_rate, d.volume, d.delays_ms) == (0.3, SR, 0.5, [200.0, 250.0, 300.0])
    g = T.RandomGain.from_config({"p": 1.0, "min_db": -6.0, "max_db": -1.0}, SR)
    assert (g.p, g.min_db, g.max_db) == (1.0, -6.0, -1.0)


def test_validate_names_the_transforms_own_key():
    noise = OmegaConf.structured(T.NoiseConfig(p=0.5, min_snr_db=50.0, max_snr_db=40.0))
    message = r"augment\.noise\.min_snr_db = 50\.0: must not exceed augment\.noise\.max_snr_db \(40\.0\)"
    with pytest.raises(ConfigError, match=message):
        T.RandomNoise.validate(noise, "augment.noise", SR, 16384)
    with pytest.raises(ConfigError, match=r"augment\.noise\.p = 1\.5"):
        T.check_probability(OmegaConf.create({"p": 1.5}), "augment.noise")
