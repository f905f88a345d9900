import pytest
import torch

from vcmr.models import CLMR_ARGS, VCMR_ARGS, SampleCNN, build_module


def small_args(**kw):
    args = {
        "input_length": 3 * 3**4,
        "first_block": {"out_channels": 8, "kernel_size": 3},
        "n_blocks": 4,
        "channels": [8, 8, 16, 16],
        "kernel_size": 3,
        "pool_size": 3,
        "last_block": {"out_channels": 12, "kernel_size": 1},
    }
    args.update(kw)
    return args


def test_vcmr_layout_shapes_and_channels():
    m = SampleCNN(**VCMR_ARGS)
    assert m.input_length == 98415 == 5 * 3**9
    convs = [b[0] for b in m.blocks]
    assert (convs[0].kernel_size, convs[0].stride, convs[0].out_channels) == ((5,), (5,), 128)
    assert [c.out_channels for c in convs[1:-1]] == [128, 128, 256, 256, 256, 256, 256, 512, 512]
    assert all(len(b) == 4 and isinstance(b[3], torch.nn.MaxPool1d) for b in list(m.blocks)[1:-1])
    assert convs[-1].kernel_size == (1,) and convs[-1].out_channels == 512
    with torch.no_grad():
        assert m(torch.randn(2, 1, 98415)).shape == (2, 512)


def test_clmr_layout():
    m = SampleCNN(**CLMR_ARGS)
    convs = [b[0] for b in m.blocks]
    assert m.input_length == 59049
    assert convs[0].kernel_size == (3,) and convs[0].stride == (3,)
    assert [c.out_channels for c in convs[1:-1]] == [128, 128, 256, 256, 256, 256, 256, 256, 512]
    assert convs[-1].kernel_size == (3,) and convs[-1].padding == (1,)
    with torch.no_grad():
        assert m(torch.randn(2, 1, 59049)).shape == (2, 512)


def test_input_length_checked_against_architecture():
    with pytest.raises(ValueError, match="input_length=1000 does not fit"):
        SampleCNN(**small_args(input_length=1000))
    with pytest.raises(ValueError, match="n_blocks=3 but channels has 4"):
        SampleCNN(**small_args(n_blocks=3))
    m = SampleCNN(**small_args())
    with pytest.raises(ValueError, match=r"expects \[B, 1, 243\]"):
        m(torch.randn(2, 1, 200))


def test_freeze_blocks_stops_gradients_and_bn_updates():
    m = build_module("samplecnn", small_args())
    m.freeze_blocks(2)
    m.train()
    bn0 = m.blocks[0][1]
    before = bn0.running_mean.clone()
    out = m(torch.randn(4, 1, 243))
    out.sum().backward()
    assert all(p.grad is None for p in m.blocks[0].parameters())
    assert all(p.grad is None for p in m.blocks[1].parameters())
    assert m.blocks[2][0].weight.grad is not None
    assert torch.equal(before, bn0.running_mean)
    assert m.blocks[3][1].training and not bn0.training


def test_build_module_errors():
    with pytest.raises(KeyError, match="unknown module name 'nope'"):
        build_module("nope", {})
    with pytest.raises(TypeError, match="bad arguments for module 'samplecnn'"):
        build_module("samplecnn", {**small_args(), "bogus": 1})
