"""The paper's backbone: ResNet-50 cut after ``layer4[1]`` (sec. 4).

Three things live here, all about turning an image into the features ``F(x)`` the readout
reads from:

* checkpoint loading (robustness-library checkpoints and plain torchvision state dicts, or a
  seeded random init), with the weights' sha256 that travels with every result;
* preprocessing: any PNG/JPEG (gray, RGB, RGBA composited onto the stimulus background) to a
  ``[3, 224, 224]`` float tensor in [0, 1], the tensor saliency differentiates with respect to;
* batched feature extraction to ``[N, 2048, 7, 7]`` float16.

Nothing is ever downloaded: weights come from a file the lab puts in place.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from torch import nn

from stimloop.science.backbone_spec import (  # noqa: F401  (re-exported)
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneError,
    BackboneSpec,
    CheckpointKeysError,
    ChecksumMismatchError,
    Format,
    NotACheckpointError,
    WeightsNotFoundError,
    file_sha256,
    parse_layer,
)

FEATURE_SHAPE = (2048, 7, 7)
# The stimuli's uniform gray background (paper sec. 4: "on a gray background"), as 8-bit RGB.
STIMULUS_BACKGROUND = (128, 128, 128)

Precision = Literal["fp32", "bf16", "fp16"]
ProgressCallback = Callable[[int, int], None]

# Keys of a robustness-library checkpoint that are not the classifier: the attack's copy of the
# model and the input normaliser (which we apply ourselves, from the registry's mean/std).
_DROPPED_PREFIXES = ("module.attacker.", "attacker.", "module.normalizer.", "normalizer.")
_STRIPPED_PREFIXES = ("module.model.", "model.", "module.")


class ImageError(ValueError):
    """An image file cannot be read; the message names the file."""


@dataclass
class Backbone:
    """A loaded backbone: the feature extractor and the fingerprint of its weights."""

    spec: BackboneSpec
    model: FeatureExtractor
    weights_sha256: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


class FeatureExtractor(nn.Module):
    """``[B, 3, H, W]`` images in [0, 1] -> normalised -> ResNet-50 up to ``layer4[1]``.

    The truncated trunk ends with the ``layer4[1]`` block itself, so its output is the block's
    final ReLU (the paper's "last ReLU of layer 4.1"), not ``layer4[1].relu``, which the block
    calls three times. Output ``[B, 2048, 7, 7]`` at 224 px. Parameters are frozen; gradients
    still flow to the input, which is what saliency needs.
    """

    mean: torch.Tensor  # [1, 3, 1, 1] buffers: ImageNet normalisation
    std: torch.Tensor

    def __init__(
        self,
        resnet: torchvision.models.ResNet,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        layer: str = "layer4.1",
    ) -> None:
        super().__init__()
        stage, block = parse_layer(layer)
        parts: list[nn.Module] = [resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool]
        for s in range(1, stage):
            parts.append(getattr(resnet, f"layer{s}"))
        parts.append(getattr(resnet, f"layer{stage}")[: block + 1])
        self.trunk = nn.Sequential(*parts)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.eval()
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, 3, H, W]`` in [0, 1]; returns ``[B, 2048, H/32, W/32]``."""
        return self.trunk((x - self.mean) / self.std)


# --------------------------------------------------------------------------- weights


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's keys and tensor bytes, in key order.

    The fingerprint of weights that have no file (the seeded random init).
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def random_resnet50(seed: int) -> torchvision.models.ResNet:
    """A ResNet-50 with torchvision's initialisation drawn from ``seed``; global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torchvision.models.resnet50(weights=None)


def detect_format(obj: Any) -> Literal["robustness", "torchvision"]:
    """Tell a robustness-library checkpoint from a plain torchvision state dict."""
    if not isinstance(obj, Mapping):
        raise NotACheckpointError(
            f"expected a dict of tensors, found a {type(obj).__name__}; this is not a checkpoint"
        )
    if "model" in obj or "state_dict" in obj:
        return "robustness"
    if any(isinstance(k, str) and k.startswith(("module.", "model.")) for k in obj):
        return "robustness"
    return "torchvision"


def clean_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The classifier's state dict out of either checkpoint format.

    Robustness checkpoints: take ``model`` (or ``state_dict``), drop the ``attacker`` and
    ``normalizer`` keys, strip the first of the prefixes ``module.model.``, ``model.``,
    ``module.``. A plain torchvision state dict passes through unchanged.
    """
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise NotACheckpointError("the file holds no state dict (a mapping of names to tensors)")
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or key.startswith(_DROPPED_PREFIXES):
            continue
        for prefix in _STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if not isinstance(value, torch.Tensor):
            raise NotACheckpointError(f"entry {key!r} is a {type(value).__name__}, not a tensor")
        cleaned[key] = value
    return cleaned


def read_checkpoint(path: Path, *, trusted: bool = False) -> Any:
    """``torch.load`` with ``weights_only`` unless trusted, turning failures into clear errors."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        if not trusted and "weights_only" in str(exc).lower():
            raise NotACheckpointError(
                f"{path} holds Python objects besides tensors, which a weights-only load "
                "refuses. If you made this file yourself and trust it, set trusted = true for "
                "its entry in models_store/backbones.toml."
            ) from exc
        raise NotACheckpointError(f"{path} is not a PyTorch checkpoint ({exc})") from exc
    except Exception as exc:  # torch.load raises many types on a damaged file
        raise NotACheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc


def build_resnet50(state_dict: Mapping[str, torch.Tensor]) -> torchvision.models.ResNet:
    """A torchvision ResNet-50 with ``state_dict`` loaded strictly, keys checked first."""
    model = torchvision.models.resnet50(weights=None)
    expected = set(model.state_dict())
    found = set(state_dict)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointKeysError(
            "the checkpoint's keys do not match a torchvision ResNet-50: "
            + "; ".join(parts)
            + ". Is this a ResNet-50 checkpoint, and is its format right in backbones.toml?"
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointKeysError(
            f"the checkpoint's tensors do not fit a ResNet-50: {exc}"
        ) from exc
    return model


def fast_precision(device: torch.device | str) -> Precision:
    """The quicker forward where the answer need not be fp32 (simulations, demos, tests).

    bf16 autocast is about 3x faster than fp32 on CPUs with AVX-512 (bf16 instructions) and on
    GPUs, but about 5x slower on AVX2-only CPUs, which emulate it. The real pipeline keeps
    its configured precision (fp32 by default, the paper's).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    capability = torch.backends.cpu.get_cpu_capability()
    return "bf16" if capability.startswith("AVX512") else "fp32"


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_backbone(spec: BackboneSpec, weights_dir: Path, device: str = "auto") -> Backbone:
    """Build the feature extractor for a registry entry.

    Raises ``WeightsNotFoundError``, ``ChecksumMismatchError``, ``NotACheckpointError`` or
    ``CheckpointKeysError`` with a message a person can act on.
    """
    if spec.format == "random":
        assert spec.seed is not None
        resnet = random_resnet50(spec.seed)
        sha = state_dict_sha256(resnet.state_dict())
    else:
        assert spec.weights is not None
        path = Path(weights_dir) / spec.weights
        if not path.is_file():
            raise WeightsNotFoundError(
                f"backbone {spec.name!r}: weights file {path} not found. Copy {spec.weights} "
                f"into {Path(weights_dir)} (models_store/weights/); nothing is downloaded."
            )
        sha = file_sha256(path)
        if spec.sha256 and spec.sha256.lower() != sha:
            raise ChecksumMismatchError(
                f"backbone {spec.name!r}: {path} has sha256 {sha}, but backbones.toml expects "
                f"{spec.sha256}. Replace the file with the right one, or correct the registry."
            )
        obj = read_checkpoint(path, trusted=spec.trusted)
        found = detect_format(obj)
        if found != spec.format:
            raise NotACheckpointError(
                f"backbone {spec.name!r}: {path} looks like a {found} checkpoint, but "
                f"backbones.toml says format = {spec.format!r}; correct the registry."
            )
        resnet = build_resnet50(clean_state_dict(obj))
    extractor = FeatureExtractor(resnet, spec.mean, spec.std, spec.layer)
    target = resolve_device(device)
    extractor = extractor.to(memory_format=torch.channels_last).to(target)
    return Backbone(spec=spec, model=extractor, weights_sha256=sha, device=target)


# --------------------------------------------------------------------------- preprocessing


def read_image(source: Path | bytes, name: str | None = None) -> Image.Image:
    """Decode a PNG/JPEG fully, or raise ``ImageError`` naming the file."""
    label = name or (str(source) if isinstance(source, Path) else "<bytes>")
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {label}: {exc}") from exc
    return image


def image_to_tensor(
    image: Image.Image,
    size: int = 224,
    background: tuple[int, int, int] = STIMULUS_BACKGROUND,
) -> torch.Tensor:
    """A decoded image -> ``[3, size, size]`` float32 in [0, 1].

    Gray and palette images become RGB; transparency is composited onto ``background``; a
    non-square image is padded to a square with ``background`` (centred, aspect kept); then
    resized to ``size`` with antialiasing (paper sec. 4: shown at 280, resized to 224).
    """
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(canvas, rgba).convert("RGB")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if image.width != image.height:
        side = max(image.width, image.height)
        canvas = Image.new("RGB", (side, side), background)
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = canvas
    array = np.asarray(image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
    if tensor.shape[-1] != size:
        tensor = torch.nn.functional.interpolate(
            tensor[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0].clamp_(0.0, 1.0)
    return tensor


def load_input(
    source: Path | bytes, size: int = 224, background: tuple[int, int, int] = STIMULUS_BACKGROUND
) -> torch.Tensor:
    """A file (or its bytes) -> ``[3, size, size]`` in [0, 1]."""
    return image_to_tensor(read_image(source), size, background)


# --------------------------------------------------------------------------- extraction

ImageSource = Path | bytes | torch.Tensor | np.ndarray


def _as_input(item: ImageSource, size: int) -> torch.Tensor:
    if isinstance(item, Path | bytes):
        return load_input(item, size)
    tensor = torch.as_tensor(item, dtype=torch.float32)
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"an image tensor must be [3, H, W] in [0, 1], not {tuple(tensor.shape)}")
    if tensor.shape[-1] != size or tensor.shape[-2] != size:
        tensor = torch.nn.functional.interpolate(
            tensor[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return tensor


def _batches(items: Sequence[ImageSource], batch_size: int) -> Iterator[Sequence[ImageSource]]:
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def forward_features(
    model: nn.Module, batch: torch.Tensor, precision: Precision = "fp32"
) -> torch.Tensor:
    """One no-grad forward of ``[B, 3, H, W]`` in [0, 1] -> float32 ``[B, 2048, h, w]``."""
    device = next(model.parameters()).device
    batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        if precision == "fp32":
            out = model(batch)
        else:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast(device_type=device.type, dtype=dtype):
                out = model(batch)
    return out.float()


def extract_features(
    backbone: Backbone,
    images: Sequence[ImageSource],
    *,
    batch_size: int = 32,
    precision: Precision = "fp32",
    progress: ProgressCallback | None = None,
    decode_threads: int = 4,
) -> np.ndarray:
    """Features of many images, ``[N, 2048, 7, 7]`` float16 (how they are cached and stored).

    ``images``: file paths, encoded bytes, or ``[3, H, W]`` tensors in [0, 1]; a file that
    cannot be read raises ``ImageError`` naming it (nothing is skipped). ``progress(done,
    total)`` is called after every batch. Pipelined: while one batch runs through the network,
    the next is decoded and resized on ``decode_threads`` CPU threads (pinned for the copy
    when the backbone is on a GPU); the result does not depend on it.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    size = backbone.spec.input_size
    pin = backbone.device.type == "cuda"
    chunks = list(_batches(images, batch_size))
    out = np.empty((len(images), *FEATURE_SHAPE), dtype=np.float16)
    done = 0
    with (
        ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="decode") as items,
        ThreadPoolExecutor(1, thread_name_prefix="prefetch") as prefetch,
    ):

        def decode(chunk: Sequence[ImageSource]) -> torch.Tensor:
            batch = torch.stack(list(items.map(lambda item: _as_input(item, size), chunk)))
            return batch.pin_memory() if pin else batch

        pending = prefetch.submit(decode, chunks[0]) if chunks else None
        for i in range(len(chunks)):
            assert pending is not None
            batch = pending.result()
            if i + 1 < len(chunks):
                pending = prefetch.submit(decode, chunks[i + 1])
            features = forward_features(backbone.model, batch, precision).cpu().numpy()
            if done == 0 and features.shape[1:] != out.shape[1:]:  # another input size
                out = np.empty((len(images), *features.shape[1:]), dtype=np.float16)
            if not np.isfinite(features).all() or np.abs(features).max() > np.finfo(np.float16).max:
                raise BackboneError("features are not finite in float16; check the weights file")
            out[done : done + len(batch)] = features
            done += len(batch)
            if progress is not None:
                progress(done, len(images))
    return out
