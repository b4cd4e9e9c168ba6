"""Parity with torchvision through the fixture of tools/make_torchvision_fixture.py (no torch)."""

import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax.models import convert
from hpe_jax.models.dual_modality import DualModalityNet
from hpe_jax.models.resnet import ResNet
from tools import convert_torchvision

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures",
                       "torchvision_resnet_parity.npz")


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def r18_pth(fixture, tmp_path_factory):
    """A genuine torch.save file (ResNet-18 topology, widths / 8), written back to disk."""
    path = tmp_path_factory.mktemp("pth") / "resnet18_narrow.pth"
    fixture["r18_pth"].tofile(path)
    return path


def _r50_state_dict(fixture):
    return {k.split(":", 1)[1]: v for k, v in fixture.items() if k.startswith("r50_state:")}


def _relative_error(got, want):
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


@pytest.mark.parametrize("net,depth,width", [("r18", 18, 1 / 8), ("r50", 50, 1 / 16)])
def test_converted_torchvision_weights_reproduce_its_features(fixture, r18_pth, net, depth,
                                                              width):
    sd = convert.load_state_dict(r18_pth) if net == "r18" else _r50_state_dict(fixture)
    params, batch_stats = convert.torchvision_to_flax(sd, depth)
    model = ResNet(depth=depth, width=width)
    variables = {"params": params, "batch_stats": batch_stats}
    x = fixture["input"]
    evaluated = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    for site in range(5):
        assert _relative_error(evaluated[site], fixture[f"{net}:eval:{site}"]) < 1e-4
    if net != "r18":
        return  # training mode is block-type agnostic; one compile of it keeps the test fast
    trained, _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, x)
    for site in range(5):
        # Batch statistics of the last stages come from 8 values (batch 2, 2x2 positions), which
        # amplifies float32 rounding against the float64 reference; still far below any bug.
        assert _relative_error(trained[site], fixture[f"{net}:train:{site}"]) < 1e-3


def test_pth_reader_returns_torchvision_names_and_dtypes(r18_pth):
    sd = convert.read_torch_file(r18_pth)
    assert sd["conv1.weight"].shape == (8, 3, 7, 7) and sd["conv1.weight"].dtype == np.float32
    assert sd["layer2.0.downsample.0.weight"].shape == (16, 8, 1, 1)
    assert sd["bn1.num_batches_tracked"].dtype == np.int64
    assert "fc.weight" in sd


def test_wrong_depth_or_foreign_file_is_a_clear_error(r18_pth, tmp_path):
    sd = convert.load_state_dict(r18_pth)
    with pytest.raises(ValueError, match="ResNet-34"):
        convert.torchvision_to_flax(sd, 34)
    with pytest.raises(ValueError, match="unexpected keys"):
        convert.torchvision_to_flax({**sd, "head.weight": np.zeros(3)}, 18)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ValueError, match="zip-format"):
        convert.read_torch_file(legacy)
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("evil/data.pkl", b"\x80\x02cos\nsystem\nq\x00.")
    with pytest.raises(Exception, match="refusing to load os.system"):
        convert.read_torch_file(evil)


def test_a_missing_or_truncated_weights_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.pth: no such file; download"):
        convert.load_state_dict(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=r"nope.npz: no such file"):
        convert.load_converted(str(tmp_path / "nope.npz"), 18)
    cut = tmp_path / "cut.npz"
    np.savez(cut, a=np.zeros(1000))
    cut.write_bytes(cut.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut.npz cannot be read .*truncated"):
        convert.load_state_dict(cut)


def test_tool_output_initialises_both_encoders(r18_pth, tmp_path, abstract_init, capsys):
    out = tmp_path / "r18.npz"
    convert_torchvision.main(["--input", str(r18_pth), "--depth", "18", "--output", str(out)])
    assert "ResNet-18 width 0.125" in capsys.readouterr().out
    model = DualModalityNet(resnet_depth=18, width=0.125, deconv_features=8, proj_hidden=8)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    d = jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32)
    variables = abstract_init(model, x, d, train=False)
    params, stats = convert.torchvision_to_flax(convert.load_state_dict(r18_pth), 18)
    for source in (out, r18_pth):
        loaded = convert.load_pretrained_encoders(variables, source, 18)
        rgb, dep = loaded["params"]["rgb_encoder"], loaded["params"]["depth_encoder"]
        np.testing.assert_array_equal(rgb["layer3_1"]["conv2"]["kernel"],
                                      params["layer3_1"]["conv2"]["kernel"])
        np.testing.assert_array_equal(dep["layer3_1"]["conv2"]["kernel"],
                                      params["layer3_1"]["conv2"]["kernel"])
        np.testing.assert_allclose(dep["conv1"]["kernel"],
                                   params["conv1"]["kernel"].mean(axis=2, keepdims=True))
        assert dep["conv1"]["kernel"].shape == (7, 7, 1, 8)
        np.testing.assert_array_equal(loaded["batch_stats"]["depth_encoder"]["bn1"]["var"],
                                      stats["bn1"]["var"])
        # The decoder is left as it was.
        assert loaded["params"]["decoder"] is variables["params"]["decoder"]
    wider = DualModalityNet(resnet_depth=18, width=0.25, deconv_features=8, proj_hidden=8)
    with pytest.raises(ValueError, match="width"):
        convert.load_pretrained_encoders(abstract_init(wider, x, d, train=False), out, 18)


def test_conversion_into_the_scanned_layout(fixture, tmp_path, abstract_init):
    # torchvision's ResNet-50 (widths / 16) loaded into encoders built with scan_blocks=True:
    # the stacked variables reproduce torchvision's features, and files stay unrolled.
    sd = _r50_state_dict(fixture)
    params, batch_stats = convert.torchvision_to_flax(sd, 50)
    model = DualModalityNet(resnet_depth=50, width=1 / 16, deconv_features=8, proj_hidden=8,
                            scan_blocks=True)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    d = jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32)
    loaded = convert.load_pretrained_encoders(abstract_init(model, x, d, train=False), sd, 50)
    rgb = {col: loaded[col]["rgb_encoder"] for col in ("params", "batch_stats")}
    assert convert.is_scanned(rgb["params"]) and not convert.is_scanned(params)
    np.testing.assert_array_equal(rgb["params"]["layer3_blocks"]["conv2"]["kernel"][4],
                                  params["layer3_5"]["conv2"]["kernel"])
    np.testing.assert_array_equal(rgb["batch_stats"]["layer2_blocks"]["bn3"]["var"][0],
                                  batch_stats["layer2_1"]["bn3"]["var"])
    encoder = ResNet(depth=50, width=1 / 16, scan_blocks=True)
    evaluated = jax.jit(lambda v, x: encoder.apply(v, x, train=False))(rgb, fixture["input"])
    for site in range(5):
        assert _relative_error(evaluated[site], fixture[f"r50:eval:{site}"]) < 1e-4
    # Round trip through a converted file: a scanned tree is written unrolled and reads back
    # exactly, into either layout.
    out = tmp_path / "scanned.npz"
    convert.save_converted(out, rgb["params"], rgb["batch_stats"])
    with np.load(out) as data:
        assert "params/layer3_5/conv2/kernel" in data.files
        assert not any("blocks" in k for k in data.files)
    back_params, back_stats = convert.load_converted(out, 50)
    for a, b in ((back_params, params), (back_stats, batch_stats)):
        assert jax.tree.structure(a) == jax.tree.structure(b)
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(u, v)
    again = convert.load_pretrained_encoders(abstract_init(model, x, d, train=False), out, 50)
    for col in ("params", "batch_stats"):
        for name in convert.ENCODERS:
            for u, v in zip(jax.tree.leaves(again[col][name]), jax.tree.leaves(loaded[col][name]),
                            strict=True):
                np.testing.assert_array_equal(u, v)
