"""Backbone: checkpoint formats, clear errors, features equal to torchvision's, preprocessing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from stimloop.science import backbone as bb
from stimloop.science.images import encode_png


@pytest.fixture(scope="module")
def resnet(random_spec):
    return bb.random_resnet50(random_spec.seed)


@pytest.fixture(scope="module")
def checkpoints(resnet, tmp_path_factory):
    """The seeded model saved in both formats the registry accepts."""
    folder = tmp_path_factory.mktemp("ckpt")
    sd = resnet.state_dict()
    torch.save(sd, folder / "tv.pt")
    robust = {f"module.model.{k}": v for k, v in sd.items()}
    robust.update({f"module.attacker.model.{k}": v for k, v in list(sd.items())[:5]})
    robust["module.normalizer.new_mean"] = torch.zeros(3, 1, 1)
    robust["module.normalizer.new_std"] = torch.ones(3, 1, 1)
    torch.save({"model": robust, "epoch": 90}, folder / "robust.pt")
    return folder


@pytest.fixture(scope="module")
def images(tiny_stimuli):
    return torch.stack([bb.image_to_tensor(Image.fromarray(s.image)) for s in tiny_stimuli[:3]])


def spec(fmt, weights, **kw):
    return bb.BackboneSpec(name="t", format=fmt, weights=weights, **kw)


def test_both_formats_load_and_give_identical_features(checkpoints, random_backbone, images):
    tv = bb.load_backbone(spec("torchvision", "tv.pt"), checkpoints, device="cpu")
    rb = bb.load_backbone(spec("robustness", "robust.pt"), checkpoints, device="cpu")
    f_tv = bb.forward_features(tv.model, images)
    f_rb = bb.forward_features(rb.model, images)
    f_rand = bb.forward_features(random_backbone.model, images)
    assert torch.equal(f_tv, f_rb)
    assert torch.equal(f_tv, f_rand)
    assert tv.weights_sha256 == bb.file_sha256(checkpoints / "tv.pt")
    assert rb.weights_sha256 != tv.weights_sha256  # the file's hash, not the tensors'


def test_features_equal_torchvision_hook_on_layer4_1(resnet, random_backbone, images):
    captured = {}
    handle = resnet.layer4[1].register_forward_hook(lambda m, i, o: captured.setdefault("f", o))
    resnet.eval()
    mean = torch.tensor(bb.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(bb.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        resnet((images - mean) / std)
    handle.remove()
    ours = bb.forward_features(random_backbone.model, images)
    assert ours.shape == (3, *bb.FEATURE_SHAPE)
    torch.testing.assert_close(ours, captured["f"], rtol=1e-4, atol=1e-4)
    assert (ours >= 0).all()  # the block's final ReLU


def test_extract_features_shape_dtype_progress(random_backbone, tiny_stimuli, tmp_path):
    paths = []
    for s in tiny_stimuli[:3]:
        paths.append(tmp_path / f"{s.id}.png")
        paths[-1].write_bytes(s.png())
    calls = []
    out = bb.extract_features(
        random_backbone, paths, batch_size=2, progress=lambda d, t: calls.append((d, t))
    )
    assert out.shape == (3, 2048, 7, 7) and out.dtype == np.float16
    assert calls == [(2, 3), (3, 3)]
    direct = bb.forward_features(
        random_backbone.model, torch.stack([bb.load_input(p) for p in paths])
    )
    np.testing.assert_allclose(out, direct.numpy().astype(np.float16))


def test_missing_weights_file_says_where_to_put_it(tmp_path):
    with pytest.raises(bb.WeightsNotFoundError, match=r"Copy imagenet_l2_3_0\.pt into"):
        bb.load_backbone(spec("robustness", "imagenet_l2_3_0.pt"), tmp_path, device="cpu")


def test_sha256_mismatch(checkpoints):
    with pytest.raises(bb.ChecksumMismatchError, match="expects 0000"):
        bb.load_backbone(spec("torchvision", "tv.pt", sha256="0000"), checkpoints, device="cpu")


def test_sha256_match_is_accepted(checkpoints):
    sha = bb.file_sha256(checkpoints / "tv.pt")
    loaded = bb.load_backbone(spec("torchvision", "tv.pt", sha256=sha.upper()), checkpoints, "cpu")
    assert loaded.weights_sha256 == sha


def test_wrong_keys_are_named(resnet, tmp_path):
    sd = dict(resnet.state_dict())
    sd.pop("fc.weight")
    sd["extra.head.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(
        bb.CheckpointKeysError, match=r"1 missing \(e\.g\. fc\.weight\).*extra\.head"
    ):
        bb.load_backbone(spec("torchvision", "bad.pt"), tmp_path, device="cpu")


def test_wrong_shapes_are_reported(resnet, tmp_path):
    sd = dict(resnet.state_dict())
    sd["fc.weight"] = torch.zeros(10, 2048)
    torch.save(sd, tmp_path / "shape.pt")
    with pytest.raises(bb.CheckpointKeysError, match=r"fc\.weight"):
        bb.load_backbone(spec("torchvision", "shape.pt"), tmp_path, device="cpu")


def test_corrupt_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(bb.NotACheckpointError, match=r"junk\.pt"):
        bb.load_backbone(spec("torchvision", "junk.pt"), tmp_path, device="cpu")


def test_truncated_checkpoint(checkpoints, tmp_path):
    data = (checkpoints / "tv.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(bb.NotACheckpointError):
        bb.load_backbone(spec("torchvision", "cut.pt"), tmp_path, device="cpu")


class Opaque:
    """Something a weights-only load refuses."""


def test_untrusted_pickle_is_refused_with_advice(tmp_path):
    torch.save({"model": {"x": torch.zeros(1)}, "args": Opaque()}, tmp_path / "obj.pt")
    with pytest.raises(bb.NotACheckpointError, match="trusted = true"):
        bb.load_backbone(spec("robustness", "obj.pt"), tmp_path, device="cpu")


def test_format_mismatch_is_reported(checkpoints):
    with pytest.raises(bb.NotACheckpointError, match="looks like a robustness checkpoint"):
        bb.load_backbone(spec("torchvision", "robust.pt"), checkpoints, device="cpu")


def test_clean_state_dict_prefixes():
    t = torch.zeros(1)
    for key in ("module.model.conv1.weight", "model.conv1.weight", "module.conv1.weight"):
        assert list(bb.clean_state_dict({"state_dict": {key: t}})) == ["conv1.weight"]
    dropped = {
        "module.attacker.model.conv1.weight": t,
        "module.normalizer.new_std": t,
        "module.model.conv1.weight": t,
    }
    assert list(bb.clean_state_dict({"model": dropped})) == ["conv1.weight"]
    with pytest.raises(bb.NotACheckpointError):
        bb.clean_state_dict([1, 2, 3])


@pytest.mark.backbone
def test_random_backbone_is_deterministic(random_spec):
    a = bb.state_dict_sha256(bb.random_resnet50(random_spec.seed).state_dict())
    b = bb.state_dict_sha256(bb.random_resnet50(random_spec.seed).state_dict())
    c = bb.state_dict_sha256(bb.random_resnet50(random_spec.seed + 1).state_dict())
    assert a == b != c


def test_spec_validation():
    with pytest.raises(bb.BackboneError, match="unknown field"):
        bb.BackboneSpec.from_mapping("x", {"format": "random", "seed": 1, "colour": 3})
    with pytest.raises(bb.BackboneError, match="needs an integer seed"):
        bb.BackboneSpec.from_mapping("x", {"format": "random"})
    with pytest.raises(bb.BackboneError, match="needs a weights file"):
        bb.BackboneSpec.from_mapping("x", {"format": "robustness"})
    with pytest.raises(bb.BackboneError, match="does not exist"):
        bb.BackboneSpec.from_mapping("x", {"format": "random", "seed": 0, "layer": "layer4.7"})


# --------------------------------------------------------------------------- preprocessing


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mode", "size", "fmt"),
    [
        ("L", (280, 280), "PNG"),
        ("RGB", (100, 100), "JPEG"),
        ("RGBA", (280, 280), "PNG"),
        ("RGB", (300, 200), "PNG"),
        ("P", (64, 64), "PNG"),
        ("I;16", (50, 50), "PNG"),
    ],
)
def test_preprocessing_handles_modes_and_sizes(mode, size, fmt):
    image = Image.new(mode, size)
    tensor = bb.load_input(_encoded(image, fmt))
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0


def test_transparent_pixels_become_the_background():
    image = Image.new("RGBA", (280, 280), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (100, 100, 180, 180))
    tensor = bb.image_to_tensor(image)
    assert torch.allclose(tensor[:, 5, 5], torch.full((3,), 128 / 255))
    assert torch.allclose(tensor[:, 112, 112], torch.tensor([0.0, 0.0, 1.0]))


def test_non_square_images_are_padded_not_stretched():
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    tensor = bb.image_to_tensor(image)
    assert torch.allclose(tensor[:, 5, 112], torch.full((3,), 128 / 255))  # padding on top
    assert torch.allclose(tensor[:, 112, 112], torch.ones(3))


def test_preprocessing_matches_pil_for_native_size():
    array = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    tensor = bb.image_to_tensor(Image.fromarray(array))
    np.testing.assert_allclose(tensor.permute(1, 2, 0).numpy(), array / 255.0, atol=1e-6)


def test_bad_image_file_is_named(random_backbone, tiny_stimuli, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encode_png(tiny_stimuli[0].image))
    bad = tmp_path / "broken_stimulus.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(bb.ImageError, match=r"broken_stimulus\.png"):
        bb.extract_features(random_backbone, [good, bad])


def test_bf16_is_close_to_fp32(random_backbone, images):
    fp32 = bb.forward_features(random_backbone.model, images[:2])
    bf16 = bb.forward_features(random_backbone.model, images[:2], precision="bf16")
    rel = (bf16 - fp32).norm() / fp32.norm()
    assert rel < 0.05


def test_layer_cut_is_configurable(resnet):
    model = bb.FeatureExtractor(resnet, layer="layer3.5")
    with torch.no_grad():
        out = model(torch.rand(1, 3, 224, 224))
    assert out.shape == (1, 1024, 14, 14)
    assert isinstance(model.trunk[-1][-1], torchvision.models.resnet.Bottleneck)
