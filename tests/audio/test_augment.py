"""The augmentation chain: built from config via the registry, reproducible, validated."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vcmr.audio import augment as A
from vcmr.audio import transforms as T
from vcmr.config import ConfigError, load_config

from .test_dsp import SR, gen

CONFIG = Path(__file__).resolve().parents[2] / "config" / "augment" / "clmr.yaml"


@pytest.fixture(scope="module")
def cfg_dict() -> dict:
    return OmegaConf.to_container(load_config(CONFIG).augment)


def test_inplace_matches_out_of_place_and_chain_keeps_input():
    x = torch.randn(8, 1, 9000, generator=gen(15))
    for t in (T.RandomDelay(0.5, SR, 10, 50, 10, 0.5), T.RandomFilter(0.5, SR, 0.5, 2, 2200, 4000, 200, 1200)):
        ref, _ = t.forward_with_params(x, gen(4))
        buf = x.clone()
        out, _ = t.forward_with_params(buf, gen(4), inplace=True)
        assert torch.equal(out, ref) and out.data_ptr() == buf.data_ptr()
    cfg = OmegaConf.to_container(load_config(CONFIG).augment)
    chain = A.build_augmentation(cfg, SR, 9000)  # crop length == input length: no copy by the crop
    before = x.clone()
    chain(x, gen(5))
    assert torch.equal(x, before)


def _head_chain(fuse: bool, **extra) -> A.AugmentationChain:
    transforms = {
        "polarity": T.RandomPolarity(0.5),
        "gain_a": T.RandomGain(0.5, -12.0, -1.0),
        "noise": T.RandomNoise(0.4, 10.0, 30.0),
        "gain_b": T.RandomGain(0.6, -6.0, -0.5),
        **extra,
    }
    return A.AugmentationChain(7000, transforms, fuse=fuse)


@pytest.mark.parametrize("grad", [False, True])
def test_crop_head_equals_the_transforms_one_by_one(grad):
    # Polarity, noise and gains applied while cutting the crop: the same draws and bits as the
    # crop followed by each transform alone, including examples that get two gains (one is
    # applied before the other: the product of two factors would round differently), and
    # noise on examples already scaled. grad=True takes the torch path (the GPU's).
    x = torch.randn(40, 1, 9000, generator=gen(21))
    extra = {"filter": T.RandomFilter(0.5, SR, 0.5, 2, 2200, 4000, 200, 1200)}
    fused, alone = _head_chain(True, **extra), _head_chain(False, **extra)
    assert fused.head() == ["polarity", "gain_a", "noise", "gain_b"] and alone.head() == []
    y_ref, d_ref = alone.forward_with_params(x, gen(3))
    if grad:
        fused = _head_chain(True)
        y_ref, d_ref = _head_chain(False).forward_with_params(x, gen(3))
        x = x.clone().requires_grad_()
    times: dict = {}
    y, drawn = fused.forward_with_params(x, gen(3), step_seconds=times)
    assert torch.equal(y.detach(), y_ref)
    assert drawn.keys() == d_ref.keys()
    for name in drawn:
        for key in drawn[name]:
            assert torch.equal(drawn[name][key], d_ref[name][key]), (name, key)
    # Every path of the head ran: both gains and noise on some examples, polarity on others.
    both = d_ref["gain_a"]["apply"] & d_ref["gain_b"]["apply"]
    assert both.any() and (d_ref["noise"]["apply"] & both).any() and d_ref["polarity"]["apply"].any()
    expected = ["crop+polarity+gain_a+noise+gain_b"] + ([] if grad else ["filter"])
    assert list(times) == expected and all(v >= 0 for v in times.values())
    assert not torch.equal(y.detach(), x.detach()[..., :7000])


def test_crop_head_keeps_half_precision_input():
    # numpy has no bfloat16: the head takes torch's path, with the same bits as one by one.
    x = torch.randn(12, 1, 9000, generator=gen(5)).to(torch.bfloat16)
    y = _head_chain(True)(x, gen(6))
    assert y.dtype == torch.bfloat16 and torch.equal(y, _head_chain(False)(x, gen(6)))


def test_crop_head_stops_at_the_first_transform_that_is_not_pointwise(cfg_dict):
    chain = A.build_augmentation(cfg_dict, SR, 9000)
    assert chain.head() == ["polarity", "noise", "gain"]
    exact = A.build_augmentation(load_config(CONFIG.parent / "clmr_exact.yaml").augment, SR, 9000)
    assert exact.head() == ["polarity", "noise_std", "gain"]
    x = torch.randn(16, 1, 9500, generator=gen(2))
    for c in (chain, exact):
        # The same chain step by step: the crop, each transform or FFT pass of runs() alone.
        g = gen(8)
        ref = A.random_crop(x, 9000, g).clone()
        for run in c.runs():
            if len(run) == 1:
                ref, _ = c.transforms[run[0]].forward_with_params(ref, g, inplace=True)
            else:
                A.spectral_run(ref, [(name, c.transforms[name]) for name in run], g)
        assert torch.equal(c(x, gen(8)), ref)



@pytest.mark.parametrize("method", ["phase_vocoder", "resample"])
def test_chain_shapes_and_reproducibility(cfg_dict, method):
    cfg = copy.deepcopy(cfg_dict)
    cfg["pitch"]["method"] = method
    chain = A.build_augmentation(cfg, SR, 8192)
    assert chain.transforms["pitch"].method == method
    assert list(chain.transforms) == ["polarity", "noise", "gain", "filter", "delay", "pitch", "reverb"]
    x = torch.randn(6, 1, 12000, generator=gen(7))
    y1, y2 = chain(x, gen(42)), chain(x, gen(42))
    assert y1.shape == (6, 1, 8192) and y1.dtype == torch.float32
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, chain(x, gen(43)))
    assert torch.isfinite(y1).all()


def test_registry_order_is_chain_order(cfg_dict):
    order = ["polarity", "noise", "noise_std", "gain", "filter", "filter_sinc", "delay", "delay_mix",
             "pitch", "pitch_cents", "reverb", "reverb_sox"]
    assert list(T.TRANSFORMS) == order
    assert [f.name for f in dataclasses.fields(A.AugmentConfig)] == ["enabled", *order]
    cfg = copy.deepcopy(cfg_dict)
    for name in order:
        cfg[name]["p"] = 1.0
    assert list(A.build_augmentation(cfg, SR, 16384).transforms) == list(T.TRANSFORMS)


def test_build_makes_one_transform_per_enabled_registry_entry(cfg_dict):
    cfg = copy.deepcopy(cfg_dict)
    for name in ("polarity", "delay", "reverb"):
        cfg[name]["p"] = 0.0
    chain = A.build_augmentation(cfg, SR, 16384)
    enabled = [name for name in T.TRANSFORMS if cfg[name]["p"] > 0]
    assert enabled == ["noise", "gain", "filter", "pitch"]
    assert {k: type(t) for k, t in chain.transforms.items()} == {k: T.TRANSFORMS[k] for k in enabled}
    assert all(t.p == cfg[k]["p"] for k, t in chain.transforms.items())


def test_chain_probabilities_from_config(cfg_dict):
    chain = A.build_augmentation(cfg_dict, SR, 16384)
    expected = {"polarity": 0.8, "noise": 0.01, "gain": 0.3, "filter": 0.8, "delay": 0.3, "pitch": 0.6, "reverb": 0.6}
    assert {k: t.p for k, t in chain.transforms.items()} == expected
    # The application draws follow p (shared mechanism of every transform).
    for p in (0.01, 0.3, 0.8):
        _, params = T.RandomGain(p, -1.0, -1.0).forward_with_params(torch.zeros(20000, 1, 8), gen(3))
        assert params["apply"].float().mean().item() == pytest.approx(p, abs=0.015)


def test_chain_applies_every_transform_when_p_is_one(cfg_dict):
    cfg = copy.deepcopy(cfg_dict)
    for name in ("polarity", "noise", "gain", "filter", "delay", "pitch", "reverb"):
        cfg[name]["p"] = 1.0
    chain = A.build_augmentation(cfg, SR, 8192)
    x = torch.randn(4, 1, 8192, generator=gen(8))
    y, drawn = chain.forward_with_params(x, gen(0))
    assert all(d["apply"].all() for d in drawn.values())
    assert y.shape == x.shape


def test_disabled_chain_only_crops(cfg_dict):
    cfg = dict(cfg_dict, enabled=False)
    chain = A.build_augmentation(cfg, SR, 100)
    assert len(chain.transforms) == 0
    x = torch.arange(3000.0).view(3, 1, 1000)
    y = chain(x, gen(0))
    assert y.shape == (3, 1, 100)
    assert torch.all(y[..., 1:] - y[..., :-1] == 1)


def test_zero_probability_transforms_are_left_out(cfg_dict):
    cfg = copy.deepcopy(cfg_dict)
    cfg["pitch"]["p"] = 0.0
    cfg["noise"]["p"] = 0.0
    chain = A.build_augmentation(cfg, SR, 16384)
    assert list(chain.transforms) == ["polarity", "gain", "filter", "delay", "reverb"]


def test_build_accepts_wrapped_config_and_dictconfig():
    root = load_config(CONFIG)
    assert len(A.build_augmentation(root, SR, 16384).transforms) == 7
    assert len(A.build_augmentation(root.augment, SR, 16384).transforms) == 7


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("noise.p", 1.5, r"augment\.noise\.p"),
        ("gain.p", -0.1, r"augment\.gain\.p"),
        ("gain.min_db", 5.0, r"augment\.gain\.min_db"),
        ("filter.lowpass_max_hz", 9000.0, r"augment\.filter\.lowpass_max_hz"),
        ("pitch.hop_length", 0, r"augment\.pitch\.hop_length"),
        ("reverb.max_wet", 1.5, r"augment\.reverb\.max_wet"),
        ("delay.max_ms", 1500.0, r"augment\.delay\.max_ms"),
        ("pitch.p", "often", r"pitch\.p"),
        ("pitch.method", "sox", r"augment\.pitch\.method"),
    ],
)
def test_bad_config_names_the_key(cfg_dict, key, value, match):
    cfg = copy.deepcopy(cfg_dict)
    section, field = key.split(".")
    cfg[section][field] = value
    with pytest.raises(ConfigError, match=match):
        A.build_augmentation(cfg, SR, 16384)


def test_missing_and_unknown_keys(cfg_dict):
    cfg = copy.deepcopy(cfg_dict)
    del cfg["reverb"]["ir_length_s"]
    with pytest.raises(ConfigError, match=r"augment\.reverb\.ir_length_s"):
        A.build_augmentation(cfg, SR, 16384)
    cfg = copy.deepcopy(cfg_dict)
    cfg["gain"]["max_gain"] = 1.0
    with pytest.raises(ConfigError, match="max_gain"):
        A.build_augmentation(cfg, SR, 16384)


def test_crop_longer_than_input_raises(cfg_dict):
    chain = A.build_augmentation(cfg_dict, SR, 8192)
    with pytest.raises(ValueError, match="crop_length"):
        chain(torch.zeros(2, 1, 8000))
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        chain(torch.zeros(2, 8192))
    with pytest.raises(ConfigError, match="crop_length"):
        A.build_augmentation(cfg_dict, SR, 0)


def test_yaml_has_single_top_level_key():
    raw = OmegaConf.load(CONFIG)
    assert list(raw.keys()) == ["augment"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_chain_on_cuda_matches_cpu(cfg_dict):
    chain = A.build_augmentation(cfg_dict, SR, 8192)
    x = torch.randn(8, 1, 10000, generator=gen(9))
    y_cpu = chain(x, gen(5))
    y_gpu = chain(x.cuda(), gen(5))
    assert y_gpu.device.type == "cuda"
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=2e-3, rtol=1e-3)
