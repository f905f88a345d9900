"""ONNX export of an encoder and of a tagger: onnxruntime equals PyTorch, any batch size."""
import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from vcmr.models.export import export_onnx  # noqa: E402
from vcmr.models.heads import MLPHead  # noqa: E402
from vcmr.models.samplecnn import SampleCNN  # noqa: E402
from vcmr.models.tagger import Tagger  # noqa: E402


def tiny_encoder():
    torch.manual_seed(0)
    enc = SampleCNN(input_length=729, first_block={"out_channels": 8, "kernel_size": 3}, n_blocks=5,
                    channels=[8, 8, 16, 16, 16], kernel_size=3, pool_size=3, last_block={"out_channels": 16, "kernel_size": 1})
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return enc


def test_encoder_onnx_equals_pytorch(tmp_path):
    enc = tiny_encoder().train()
    path = export_onnx(enc, tmp_path / "encoder.onnx", torch.randn(2, 1, 729))
    assert enc.training  # mode restored
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    x = torch.randn(7, 1, 729, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = enc.eval()(x).numpy()
    got = session.run(None, {"waveform": x.numpy()})[0]
    assert got.shape == (7, 16)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_tagger_onnx_and_errors(tmp_path):
    tagger = Tagger(tiny_encoder(), MLPHead(16, 3, hidden_dim=8, dropout=0.3), freeze_encoder=True).eval()
    path = export_onnx(tagger, tmp_path / "tagger.onnx", torch.randn(1, 1, 729), output_name="logits")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(4, 1, 729)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"waveform": x.numpy()})[0], tagger(x).numpy(), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"\.onnx extension"):
        export_onnx(tagger, tmp_path / "tagger.bin", torch.randn(1, 1, 729))
    with pytest.raises(ValueError, match="ONNX output differs from PyTorch"):
        export_onnx(tagger, tmp_path / "strict.onnx", torch.randn(1, 1, 729), atol=-1.0)
    assert not (tmp_path / "strict.onnx").exists()  # a failed check leaves no file
    assert not list(tmp_path.glob(".*"))  # nor a temporary one
