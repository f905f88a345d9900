"""VM-NET, the siamese clip matcher and the regression baseline: shapes, exports, and learning
a planted audio <-> video correspondence on tiny synthetic data."""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np
import pytest
import torch
from torch import nn

from vcmr.data.feature_cache import FeatureTransform
from vcmr.losses import (
    IntraModalStructureLoss,
    RegressionMSELoss,
    SiameseContrastiveLoss,
    TopQTripletLoss,
    VMNetLoss,
    contrastive_pairs,
)
from vcmr.metrics.retrieval import cross_modal_retrieval
from vcmr.models.export import CheckpointError, load_spec_model, save_spec_model
from vcmr.models.registry import MODULES
from vcmr.models.siamese import RegressionBaseline, SiameseMatcher
from vcmr.models.vmnet import InputTransform, VMNet


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread (two threads spin against each other on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def planted(n: int, audio_shape: Tuple[int, ...], video_shape: Tuple[int, ...], seed: int, noise: float = 0.3):
    """Audio and video rows that are two fixed random linear views of one latent per pair."""
    g = np.random.default_rng(seed)
    maps = np.random.default_rng(1234)
    za = maps.standard_normal((6, int(np.prod(audio_shape))))
    zv = maps.standard_normal((6, int(np.prod(video_shape))))
    z = g.standard_normal((n, 6))
    a = (z @ za + noise * g.standard_normal((n, za.shape[1]))).reshape(n, *audio_shape)
    v = (z @ zv + noise * g.standard_normal((n, zv.shape[1]))).reshape(n, *video_shape)
    return a.astype(np.float32), v.astype(np.float32)


def fit_inputs(model: nn.Module, a: np.ndarray, v: np.ndarray, pca_v: int | None = None) -> None:
    ta = FeatureTransform(True, None, False).fit(a.reshape(-1, a.shape[-1]))
    tv = FeatureTransform(True, pca_v, False).fit(v.reshape(-1, v.shape[-1]))
    model.audio_input.load_arrays(ta.arrays())
    model.video_input.load_arrays(tv.arrays())


def train_and_score(model: nn.Module, loss: nn.Module, inputs: Callable[[torch.Tensor, torch.Tensor, int], Dict],
                    shapes: Tuple[Tuple[int, ...], Tuple[int, ...]], steps: int, lr: float) -> Dict[str, float]:
    a, v = planted(96, *shapes, seed=0)
    va, vv = planted(32, *shapes, seed=1)
    fit_inputs(model, a, v)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        idx = torch.randperm(96, generator=g)[:32]
        parts = loss(**model(**inputs(torch.from_numpy(a[idx]), torch.from_numpy(v[idx]), step)))
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return cross_modal_retrieval(model.encode_audio(torch.from_numpy(va)), model.encode_video(torch.from_numpy(vv)))


def test_vmnet_learns_planted_correspondence() -> None:
    model = VMNet(20, 30, audio_hidden=[64, 32], video_hidden=[64], embed_dim=16, dropout=0.1)
    loss = VMNetLoss(TopQTripletLoss(0.1, 10), IntraModalStructureLoss(16),
                     {"music_to_video": 3.0, "video_to_music": 1.0, "music_structure": 0.2, "video_structure": 0.2})
    m = train_and_score(model, loss, lambda a, v, s: {"audio": a, "video": v}, ((20,), (30,)), 150, 3e-3)
    assert m["a2v/R@1"] > 8 * m["chance/R@1"] and m["v2a/R@1"] > 8 * m["chance/R@1"], m


def test_siamese_learns_planted_correspondence() -> None:
    model = SiameseMatcher(4, 6, 6, layers=[64, 32, 16, 16], dropout=0.2)
    loss = SiameseContrastiveLoss(margin=1.0, l1=1e-5, l2=1e-4, reduction="sum")

    def inputs(a: torch.Tensor, v: torch.Tensor, step: int) -> Dict:
        idx, match = contrastive_pairs(a.shape[0], step)
        return {"audio": a, "video": v[idx], "match": match}

    m = train_and_score(model, loss, inputs, ((4, 6), (4, 6)), 250, 1e-3)
    assert m["a2v/R@1"] > 5 * m["chance/R@1"] and m["v2a/R@1"] > 5 * m["chance/R@1"], m


def test_regression_learns_planted_correspondence() -> None:
    model = RegressionBaseline(4, 5, 7, hidden=[64, 64, 32], dropout=0.1)
    m = train_and_score(model, RegressionMSELoss(), lambda a, v, s: {"audio": a, "video": v}, ((4, 5), (4, 7)),
                        250, 2e-3)
    assert m["a2v/R@1"] > 5 * m["chance/R@1"], m


def test_vmnet_shapes_and_branch_depths() -> None:
    model = VMNet(1140, 3584, video_transform={"pca_dim": 64, "l2": True})
    linear = lambda seq: [m for m in seq if isinstance(m, nn.Linear)]  # noqa: E731
    assert [l.out_features for l in linear(model.audio_branch)] == [2048, 1024, 512]  # 3 FC
    assert [l.out_features for l in linear(model.video_branch)] == [2048, 512]  # 2 FC
    assert all(isinstance(m, nn.Dropout) and m.p == pytest.approx(0.1) for m in model.audio_branch if isinstance(m, nn.Dropout))
    model.eval()
    out = model(torch.randn(4, 1140), torch.randn(4, 3584))
    assert out["audio"].shape == (4, 512) and out["video"].shape == (4, 512)
    assert torch.allclose(out["audio"].norm(dim=1), torch.ones(4))
    assert out["audio_features"].shape == (4, 1140) and out["video_features"].shape == (4, 64)


def test_siamese_shares_one_subnetwork_and_projects_when_sizes_differ() -> None:
    same = SiameseMatcher(10, 128, 128)
    assert isinstance(same.audio_projection, nn.Identity)
    widths = [m.out_features for m in same.shared if isinstance(m, nn.Linear)]
    assert widths == [1024, 256, 128, 128]
    assert [m.p for m in same.shared if isinstance(m, nn.Dropout)] == [0.9, 0.9, 0.9]
    x = torch.randn(3, 10, 128)
    same.eval()
    assert torch.allclose(same.encode_audio(x), same.encode_video(x))  # one network for both sides
    with pytest.raises(ValueError, match="projection_dim"):
        SiameseMatcher(10, 128, 512)
    diff = SiameseMatcher(10, 128, 512, projection_dim=256).eval()
    assert diff.encode_video(torch.randn(2, 10, 512)).shape == (2, 128)
    with pytest.raises(ValueError, match=r"\[B, 10, F\]"):
        diff.encode_audio(torch.randn(2, 9, 128))


def test_input_transform_equals_fitted_feature_transform() -> None:
    x = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float32) * 3 + 1
    t = FeatureTransform(True, 5, True).fit(x)
    m = InputTransform(12, 5, True).load_arrays(t.arrays())
    assert np.allclose(m(torch.from_numpy(x)).numpy(), t.transform(x), atol=1e-5)
    with pytest.raises(ValueError, match="components"):
        InputTransform(12, 4, False).load_arrays(t.arrays())


@pytest.mark.parametrize("name,args,inputs", [
    ("vmnet", {"audio_dim": 10, "video_dim": 21, "audio_hidden": [8, 8], "video_hidden": [8], "embed_dim": 4,
               "video_transform": {"pca_dim": 5, "l2": True}}, ((3, 10), (3, 21))),
    ("siamese", {"clip_seconds": 2, "audio_dim": 4, "video_dim": 6, "layers": [8, 4], "projection_dim": 6},
     ((3, 2, 4), (3, 2, 6))),
    ("regression", {"clip_seconds": 2, "audio_dim": 4, "video_dim": 6, "hidden": [8, 8, 8],
                    "video_transform": {"pca_dim": 3, "l2": False}}, ((3, 2, 4), (3, 2, 6))),
])
def test_spec_export_round_trip(tmp_path, name: str, args: Dict, inputs) -> None:
    model = MODULES[name](**args)
    with torch.no_grad():  # non-trivial buffers, so the round trip has to carry them
        for buf_name, buf in model.named_buffers():
            if buf.is_floating_point():
                buf.copy_(torch.rand_like(buf) + 0.5)
    model.eval()
    path = save_spec_model(tmp_path / "model.safetensors", model, {"recipe": name, "features": {"k": 1}})
    back = load_spec_model(tmp_path)  # the folder works too
    assert back.spec == model.spec and back.meta["recipe"] == name and back.meta["path"] == str(path)
    a, v = torch.randn(*inputs[0]), torch.randn(*inputs[1])
    assert torch.equal(back.encode_audio(a), model.encode_audio(a))
    assert torch.equal(back.encode_video(v), model.encode_video(v))
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_spec_export_rejects_other_files(tmp_path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="bad.safetensors: not a readable"):
        load_spec_model(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="no spec"):
        save_spec_model(tmp_path / "y.safetensors", nn.Linear(2, 2))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"vcmr_format": "encoder/1"})
    with pytest.raises(CheckpointError, match="not a spec-model export"):
        load_spec_model(tmp_path / "other.safetensors")
