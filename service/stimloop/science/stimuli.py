"""Procedural stimuli: monkey-like bodies, non-body objects, control bodies (paper sec. 4), and
faces, for labs recording from other category-selective patches.

The lab's stimuli (a rendered macaque avatar in 45 poses x 16 viewpoints, OpenImages objects,
control bodies of other species) cannot ship with the code, so demos and tests draw stand-ins
with the same structure: 280 x 280 RGB on a uniform gray background, shapes centred and clear
of the border. Every image is a pure function of (seed, category, index), so a set is identical
for a seed whatever its size.

* Bodies: an articulated avatar (head with muzzle, torso, four two-segment limbs, tail) in
  9 behaviours x 5 poses = 45 poses, each seen from 16 azimuths (22.5 degrees apart): 720
  images, of which ``n`` are drawn by a seeded permutation (the paper used 475 of 720).
* Objects: spiky, stubby, elongated, composite and textured non-body shapes.
* Control bodies: biped, bird-like, snake-like and insect-like body plans.
* Faces: a monkey-like face (head, ears, pale face mask, brows, eyes, muzzle, mouth) turned
  and tilted, gazing and in one of four expressions; control faces are drawn the same way from
  their own random stream (other individuals), as control bodies are for bodies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from stimloop.science.images import encode_png

SIZE = 280
BACKGROUND = (128, 128, 128)
MAX_EXTENT = 220  # px: every shape fits in a centred 220 px box, leaving a 30 px gray border
N_POSES, N_VIEWS = 45, 16
BEHAVIOURS = (
    "walk",
    "run",
    "sit",
    "stand",
    "reach",
    "crouch",
    "climb",
    "groom",
    "threat",
)
OBJECT_KINDS = ("spiky", "stubby", "elongated", "composite", "textured")
CONTROL_KINDS = ("biped", "bird", "snake", "insect")
EXPRESSIONS = ("neutral", "open_mouth", "lip_smack", "fear_grin")
Category = Literal["body", "object", "control_body", "face", "control_face"]
_CATEGORY_CODE = {"body": 1, "object": 2, "control_body": 3, "face": 4, "control_face": 5}
_SUPERSAMPLE = 2

Color = tuple[int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True)
class Stimulus:
    """One generated image: ``image`` is ``[280, 280, 3]`` uint8."""

    id: str
    category: Category
    params: dict[str, Any]
    image: np.ndarray = field(repr=False)

    def png(self) -> bytes:
        return encode_png(self.image)


def _rng(seed: int, category: Category, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _CATEGORY_CODE[category], index])


# --------------------------------------------------------------------------- drawing


@dataclass
class _Drawing:
    """Shapes collected in any units, then fitted into the frame and rendered anti-aliased."""

    ops: list[tuple[Any, ...]] = field(default_factory=list)

    def capsule(self, p0: Point, p1: Point, width: float, color: Color) -> None:
        self.ops.append(("capsule", p0, p1, width, color))

    def circle(self, centre: Point, radius: float, color: Color) -> None:
        self.ops.append(("circle", centre, radius, color))

    def polygon(self, points: list[Point], color: Color, stripes: tuple | None = None) -> None:
        self.ops.append(("polygon", points, color, stripes))

    def ellipse(
        self, centre: Point, rx: float, ry: float, angle: float, color: Color, stripes=None
    ) -> None:
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        ca, sa = math.cos(angle), math.sin(angle)
        xs, ys = rx * np.cos(t), ry * np.sin(t)
        pts = [(centre[0] + x * ca - y * sa, centre[1] + x * sa + y * ca) for x, y in zip(xs, ys)]
        self.polygon(pts, color, stripes)

    def _extent(self) -> tuple[float, float, float, float]:
        xs: list[float] = []
        ys: list[float] = []
        for op in self.ops:
            if op[0] == "capsule":
                _, p0, p1, w, _ = op
                for p in (p0, p1):
                    xs += [p[0] - w / 2, p[0] + w / 2]
                    ys += [p[1] - w / 2, p[1] + w / 2]
            elif op[0] == "circle":
                _, c, r, _ = op
                xs += [c[0] - r, c[0] + r]
                ys += [c[1] - r, c[1] + r]
            else:
                xs += [p[0] for p in op[1]]
                ys += [p[1] for p in op[1]]
        return min(xs), min(ys), max(xs), max(ys)

    def render(self, scale: float) -> np.ndarray:
        """Draw at ``scale`` px per unit (shrunk if needed to fit), centred; ``[280, 280, 3]``."""
        x0, y0, x1, y1 = self._extent()
        extent = max(x1 - x0, y1 - y0, 1e-6)
        scale = min(scale, MAX_EXTENT / extent) * _SUPERSAMPLE
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = SIZE * _SUPERSAMPLE / 2

        def tx(p: Point) -> tuple[float, float]:
            return ((p[0] - cx) * scale + half, (p[1] - cy) * scale + half)

        canvas = Image.new("RGB", (SIZE * _SUPERSAMPLE,) * 2, BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        for op in self.ops:
            if op[0] == "capsule":
                _, p0, p1, w, color = op
                a, b, r = tx(p0), tx(p1), w * scale / 2
                draw.line([a, b], fill=color, width=max(1, round(2 * r)))
                for c in (a, b):
                    draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=color)
            elif op[0] == "circle":
                _, c, r, color = op
                c, r = tx(c), r * scale
                draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=color)
            else:
                _, pts, color, stripes = op
                pts = [tx(p) for p in pts]
                if stripes is None:
                    draw.polygon(pts, fill=color)
                else:
                    _striped_polygon(canvas, pts, color, stripes, scale)
                    draw = ImageDraw.Draw(canvas)
        small = canvas.resize((SIZE, SIZE), Image.Resampling.BOX)
        return np.asarray(small, dtype=np.uint8).copy()


def _striped_polygon(
    canvas: Image.Image, pts: list[Point], color: Color, stripes: tuple, scale: float
) -> None:
    """Fill a polygon with stripes of ``color`` and ``stripes[0]`` (period, angle follow)."""
    other, period, angle = stripes
    mask = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    h, w = canvas.size[1], canvas.size[0]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) / (period * scale)
    band = (np.floor(phase) % 2).astype(bool)
    texture = np.where(band[..., None], np.array(color, np.uint8), np.array(other, np.uint8))
    canvas.paste(Image.fromarray(texture.astype(np.uint8), "RGB"), (0, 0), mask)


def _color(rng: np.random.Generator, lo: int = 20, hi: int = 235) -> Color:
    """A random colour kept away from the background gray."""
    while True:
        c = tuple(int(v) for v in rng.integers(lo, hi, size=3))
        if max(abs(v - 128) for v in c) > 40:
            return c  # type: ignore[return-value]


# Animal colours (fur, skin, feathers, scales): browns, tans, greys, olive, near-black.
_NATURAL: tuple[Color, ...] = (
    (120, 84, 52),
    (150, 110, 80),
    (90, 70, 50),
    (170, 140, 100),
    (60, 50, 45),
    (110, 100, 90),
    (140, 90, 60),
    (100, 80, 40),
    (200, 170, 130),
    (40, 35, 30),
)


def _natural_color(rng: np.random.Generator) -> Color:
    """An animal's colour: one of ``_NATURAL``, its brightness and hue jittered."""
    base = np.array(_NATURAL[int(rng.integers(len(_NATURAL)))], float)
    jittered = base * rng.uniform(0.8, 1.2) + rng.normal(0, 8, 3)
    return tuple(int(v) for v in np.clip(jittered, 0, 255))  # type: ignore[return-value]


def _shade(color: Color, factor: float) -> Color:
    return tuple(int(np.clip(v * factor, 0, 255)) for v in color)  # type: ignore[return-value]


# --------------------------------------------------------------------------- bodies

# Per behaviour: torso pitch, head pitch, (upper, lower) angles for fore and hind limbs
# (0 = straight down, positive = forward), tail curl. Degrees.
_BEHAVIOUR_POSES: dict[str, dict[str, Any]] = {
    "walk": dict(
        pitch=0, head=5, fore=(20, -10), fore2=(-20, 10), hind=(-20, 15), hind2=(20, -15), tail=40
    ),
    "run": dict(
        pitch=5, head=0, fore=(55, -20), fore2=(-45, 30), hind=(-50, 25), hind2=(45, -40), tail=15
    ),
    "sit": dict(
        pitch=60,
        head=-55,
        fore=(-40, 20),
        fore2=(-35, 15),
        hind=(85, -120),
        hind2=(80, -115),
        tail=-30,
    ),
    "stand": dict(
        pitch=80,
        head=-75,
        fore=(-70, 40),
        fore2=(-60, 30),
        hind=(-75, 5),
        hind2=(-85, 10),
        tail=-20,
    ),
    "reach": dict(
        pitch=35,
        head=-20,
        fore=(110, -10),
        fore2=(-20, 10),
        hind=(30, -60),
        hind2=(20, -55),
        tail=10,
    ),
    "crouch": dict(
        pitch=-5, head=10, fore=(45, -90), fore2=(40, -85), hind=(-50, 95), hind2=(-45, 90), tail=80
    ),
    "climb": dict(
        pitch=75,
        head=-60,
        fore=(150, -30),
        fore2=(120, -20),
        hind=(40, -70),
        hind2=(70, -100),
        tail=-10,
    ),
    "groom": dict(
        pitch=55,
        head=-30,
        fore=(60, 110),
        fore2=(40, 100),
        hind=(80, -120),
        hind2=(85, -125),
        tail=-40,
    ),
    "threat": dict(
        pitch=10, head=25, fore=(10, 0), fore2=(-5, 5), hind=(-10, 5), hind2=(5, -5), tail=120
    ),
}


def body_pose(seed: int, pose: int) -> dict[str, Any]:
    """Joint angles (degrees) of pose ``pose`` in 0..44: behaviour ``pose // 5`` plus jitter."""
    if not 0 <= pose < N_POSES:
        raise ValueError(f"pose must be in 0..{N_POSES - 1}")
    behaviour = BEHAVIOURS[pose // 5]
    template = _BEHAVIOUR_POSES[behaviour]
    rng = np.random.default_rng([seed, _CATEGORY_CODE["body"], 10_000 + pose])

    def jitter(v: float, amount: float = 12.0) -> float:
        return float(v + rng.uniform(-amount, amount))

    angles: dict[str, Any] = {"behaviour": behaviour}
    for key, value in template.items():
        angles[key] = [jitter(v) for v in value] if isinstance(value, tuple) else jitter(value)
    angles["head_yaw"] = jitter(0.0, 35.0)
    angles["abduction"] = jitter(8.0, 6.0)
    return angles


def _body_points(pose: dict[str, Any]) -> dict[str, Any]:
    """3-D joint positions of the avatar (torso length 1) for a pose."""
    rad = math.radians
    p = rad(pose["pitch"])
    d_t = np.array([math.cos(p), math.sin(p), 0.0])
    hip = np.zeros(3)
    shoulder = hip + d_t
    hp, hy = p + rad(pose["head"]), rad(pose["head_yaw"])
    head_dir = np.array([math.cos(hp) * math.cos(hy), math.sin(hp), math.cos(hp) * math.sin(hy)])
    head = shoulder + 0.38 * head_dir
    abd = rad(pose["abduction"])

    def limb(root: np.ndarray, side: float, angles: list[float], lengths: tuple[float, float]):
        t1, t2 = rad(angles[0]), rad(angles[0] + angles[1])

        def direction(t: float) -> np.ndarray:
            return np.array(
                [math.sin(t) * math.cos(abd), -math.cos(t) * math.cos(abd), side * math.sin(abd)]
            )

        joint = root + np.array([0, 0, 0.18 * side])
        knee = joint + lengths[0] * direction(t1)
        return [joint, knee, knee + lengths[1] * direction(t2)]

    limbs = [
        limb(shoulder, +1, pose["fore"], (0.45, 0.42)),
        limb(shoulder, -1, pose["fore2"], (0.45, 0.42)),
        limb(hip, +1, pose["hind"], (0.5, 0.45)),
        limb(hip, -1, pose["hind2"], (0.5, 0.45)),
    ]
    tail = [hip.copy()]
    base = math.pi + p - rad(25)
    for k in range(1, 7):
        a = base + rad(pose["tail"]) * k / 6
        tail.append(tail[-1] + 0.16 * np.array([math.cos(a), math.sin(a), 0.02 * k]))
    return {
        "hip": hip,
        "shoulder": shoulder,
        "head": head,
        "head_dir": head_dir,
        "limbs": limbs,
        "tail": tail,
    }


def _project(points: np.ndarray, azimuth: float, elevation: float) -> np.ndarray:
    """Orthographic view: rotate about the vertical by ``azimuth``, tilt by ``elevation``.

    ``points``: ``[K, 3]`` -> ``[K, 3]`` as (screen x, screen y downwards, depth towards viewer).
    """
    ca, sa = math.cos(azimuth), math.sin(azimuth)
    ce, se = math.cos(elevation), math.sin(elevation)
    x = points[:, 0] * ca + points[:, 2] * sa
    z = -points[:, 0] * sa + points[:, 2] * ca
    y = points[:, 1] * ce - z * se
    depth = points[:, 1] * se + z * ce
    return np.stack([x, -y, depth], axis=1)


def draw_body(seed: int, pose: int, view: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The avatar in pose ``pose`` (0..44) from viewpoint ``view`` (0..15)."""
    if not 0 <= view < N_VIEWS:
        raise ValueError(f"view must be in 0..{N_VIEWS - 1}")
    angles = body_pose(seed, pose)
    pts = _body_points(angles)
    azimuth, elevation = 2 * math.pi * view / N_VIEWS, math.radians(10)
    fur = (120, 84, 52)
    parts: list[tuple[float, tuple]] = []  # (depth, op)

    def seg(a: np.ndarray, b: np.ndarray, width: float, color: Color) -> None:
        pa, pb = _project(np.stack([a, b]), azimuth, elevation)
        parts.append(((pa[2] + pb[2]) / 2, ("capsule", tuple(pa[:2]), tuple(pb[:2]), width, color)))

    def blob(c: np.ndarray, r: float, color: Color) -> None:
        pc = _project(c[None], azimuth, elevation)[0]
        parts.append((pc[2], ("circle", tuple(pc[:2]), r, color)))

    d_t = pts["shoulder"] - pts["hip"]
    seg(pts["hip"] - 0.12 * d_t, pts["shoulder"] + 0.05 * d_t, 0.42, fur)
    for i, (joint, knee, foot) in enumerate(pts["limbs"]):
        shade = 0.85 if i % 2 else 1.0
        seg(joint, knee, 0.14, _shade(fur, shade))
        seg(knee, foot, 0.11, _shade(fur, shade * 0.9))
    for k, (a, b) in enumerate(zip(pts["tail"][:-1], pts["tail"][1:])):
        seg(a, b, 0.07 - 0.006 * k, _shade(fur, 0.8))
    blob(pts["head"], 0.2, (150, 110, 80))
    blob(pts["head"] + 0.16 * pts["head_dir"], 0.1, (190, 150, 120))
    drawing = _Drawing()
    for _, op in sorted(parts, key=lambda item: item[0]):
        drawing.ops.append(op)
    params = {**angles, "pose": pose, "view": view, "azimuth_deg": 360 * view / N_VIEWS}
    return drawing.render(scale=85.0), params


def generate_bodies(n: int, seed: int) -> list[Stimulus]:
    """``n`` (<= 720) avatar images: the first ``n`` of a seeded permutation of pose x view."""
    if not 0 <= n <= N_POSES * N_VIEWS:
        raise ValueError(f"at most {N_POSES * N_VIEWS} bodies (45 poses x 16 views), not {n}")
    order = np.random.default_rng([seed, _CATEGORY_CODE["body"]]).permutation(N_POSES * N_VIEWS)
    out = []
    for i, combo in enumerate(order[:n]):
        image, params = draw_body(seed, int(combo) // N_VIEWS, int(combo) % N_VIEWS)
        out.append(Stimulus(f"body_{i:04d}", "body", params, image))
    return out


# --------------------------------------------------------------------------- objects


def _radial(rng: np.random.Generator, radii: np.ndarray, rotation: float) -> list[Point]:
    t = np.linspace(0, 2 * np.pi, len(radii), endpoint=False) + rotation
    return [(float(r * math.cos(a)), float(r * math.sin(a))) for r, a in zip(radii, t)]


def draw_object(seed: int, index: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Object ``index``: its kind cycles through spiky, stubby, elongated, composite, textured."""
    rng = _rng(seed, "object", index)
    kind = OBJECT_KINDS[index % len(OBJECT_KINDS)]
    d = _Drawing()
    color = _color(rng)
    rotation = float(rng.uniform(0, 2 * np.pi))
    params: dict[str, Any] = {"kind": kind}
    if kind == "spiky":
        spikes = int(rng.integers(4, 14))
        outer = rng.uniform(60, 105, size=spikes)
        inner = rng.uniform(15, 40, size=spikes)
        radii = np.stack([outer, inner], axis=1).ravel()
        d.polygon(_radial(rng, radii, rotation), color)
        params["spikes"] = spikes
    elif kind == "stubby":
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        radius = 55 + np.sum(
            [rng.uniform(3, 14) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in range(2, 6)],
            axis=0,
        )
        d.polygon(_radial(rng, radius, rotation), color)
        bumps = int(rng.integers(2, 6))
        for b in range(bumps):
            a = rotation + 2 * np.pi * b / bumps
            d.circle((60 * math.cos(a), 60 * math.sin(a)), float(rng.uniform(14, 26)), color)
        params["bumps"] = bumps
    elif kind == "elongated":
        joints = int(rng.integers(2, 5))
        pts = [(0.0, 0.0)]
        heading = rotation
        for _ in range(joints):
            heading += float(rng.uniform(-0.6, 0.6))
            step = float(rng.uniform(50, 90))
            pts.append(
                (pts[-1][0] + step * math.cos(heading), pts[-1][1] + step * math.sin(heading))
            )
        width = float(rng.uniform(12, 30))
        for start, end in zip(pts[:-1], pts[1:]):
            d.capsule(start, end, width, color)
        if rng.random() < 0.5:
            d.circle(pts[-1], width * 1.2, _color(rng))
        params["segments"] = joints
    elif kind == "composite":
        parts = int(rng.integers(2, 5))
        for _ in range(parts):
            centre = (float(rng.uniform(-50, 50)), float(rng.uniform(-50, 50)))
            shape = rng.integers(0, 3)
            c = _color(rng)
            if shape == 0:
                d.ellipse(centre, rng.uniform(20, 60), rng.uniform(15, 45), rng.uniform(0, 3), c)
            elif shape == 1:
                w, h = rng.uniform(25, 80), rng.uniform(20, 60)
                d.polygon(
                    [
                        (centre[0] - w / 2, centre[1] - h / 2),
                        (centre[0] + w / 2, centre[1] - h / 2),
                        (centre[0] + w / 2, centre[1] + h / 2),
                        (centre[0] - w / 2, centre[1] + h / 2),
                    ],
                    c,
                )
            else:
                d.polygon(_radial(rng, rng.uniform(25, 60, size=3), float(rng.uniform(0, 6))), c)
        params["parts"] = parts
    else:  # textured
        stripes = (_color(rng), float(rng.uniform(6, 16)), float(rng.uniform(0, np.pi)))
        if rng.random() < 0.5:
            d.ellipse((0, 0), rng.uniform(50, 100), rng.uniform(35, 80), rotation, color, stripes)
        else:
            radii = rng.uniform(50, 95, size=int(rng.integers(5, 9)))
            d.polygon(_radial(rng, radii, rotation), color, stripes)
        params["stripe_period"] = stripes[1]
    params["color"] = list(color)
    return d.render(scale=1.0), params


def generate_objects(n: int, seed: int) -> list[Stimulus]:
    return [Stimulus(f"object_{i:04d}", "object", *_swap(draw_object(seed, i))) for i in range(n)]


def _swap(pair: tuple[np.ndarray, dict[str, Any]]) -> tuple[dict[str, Any], np.ndarray]:
    return pair[1], pair[0]


# --------------------------------------------------------------------------- control bodies


def draw_control_body(seed: int, index: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Control body ``index``: biped, bird, snake or insect (cycling), randomly posed, in an
    animal's colours (the objects take any colour)."""
    rng = _rng(seed, "control_body", index)
    kind = CONTROL_KINDS[index % len(CONTROL_KINDS)]
    d = _Drawing()
    color = _natural_color(rng)
    params: dict[str, Any] = {"kind": kind, "color": list(color)}
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731

    def limb(root: Point, a1: float, a2: float, l1: float, l2: float, w: float, c: Color) -> None:
        knee = (root[0] + l1 * math.sin(a1), root[1] + l1 * math.cos(a1))
        foot = (knee[0] + l2 * math.sin(a1 + a2), knee[1] + l2 * math.cos(a1 + a2))
        d.capsule(root, knee, w, c)
        d.capsule(knee, foot, w * 0.85, c)

    if kind == "biped":
        skin = (224, 180, 150)
        hip, neck = (0.0, 40.0), (u(-8, 8), -40.0)
        for side in (-1, 1):
            limb(
                (hip[0] + 10 * side, hip[1]), side * u(0, 0.5), -side * u(0, 0.6), 50, 50, 18, color
            )
            limb((neck[0] + 18 * side, neck[1] + 5), side * u(0.2, 2.6), u(-1, 1), 40, 38, 13, skin)
        d.capsule(hip, neck, 44, color)
        d.circle((neck[0], neck[1] - 28), 19, skin)
    elif kind == "bird":
        angle = u(-0.5, 0.5)
        d.ellipse((0, 0), 60, 32, angle, color)
        head = (55 * math.cos(angle) + 10, 55 * math.sin(angle) - 35)
        d.polygon(
            [(head[0] + 12, head[1] - 5), (head[0] + 40, head[1] + 2), (head[0] + 12, head[1] + 7)],
            (230, 180, 40),
        )
        d.circle(head, 18, color)
        d.polygon([(-50, -5), (-105, u(-40, 10)), (-100, u(15, 45))], _shade(color, 0.8))
        d.polygon([(-20, -10), (u(-10, 30), u(-90, -60)), (30, -15)], _shade(color, 0.7))
        for x in (-10.0, 12.0):
            limb((x, 28), u(-0.3, 0.3), u(-0.4, 0.4), 30, 28, 5, (200, 150, 40))
    elif kind == "snake":
        n = 40
        amplitude, waves, phase = u(15, 45), u(1.0, 2.5), u(0, 6.3)
        xs = np.linspace(-100, 100, n)
        ys = amplitude * np.sin(2 * np.pi * waves * np.linspace(0, 1, n) + phase)
        for k in range(n - 1):
            d.capsule((xs[k], ys[k]), (xs[k + 1], ys[k + 1]), 8 + 14 * k / n, color)
        d.ellipse((xs[-1] + 8, ys[-1]), 20, 13, 0.0, _shade(color, 0.85))
        params.update(amplitude=amplitude, waves=waves)
    else:  # insect
        dark = _shade(color, 0.6)
        d.ellipse((-55, 0), 45, 28, 0.0, color)
        d.ellipse((0, 0), 22, 18, 0.0, dark)
        d.circle((32, 0), 15, dark)
        for k, x in enumerate((-12.0, 0.0, 12.0)):
            for side in (-1, 1):
                a1 = side * (math.pi / 2 + (k - 1) * 0.5 + u(-0.2, 0.2))
                limb((x, 0), a1, -side * u(0.6, 1.2), 40, 40, 5, dark)
        for side in (-1, 1):
            d.capsule((40, -8 * side), (80, side * u(-55, -25)), 3, dark)
    return d.render(scale=1.0), params


def generate_control_bodies(n: int, seed: int) -> list[Stimulus]:
    return [
        Stimulus(f"control_body_{i:04d}", "control_body", *_swap(draw_control_body(seed, i)))
        for i in range(n)
    ]


# --------------------------------------------------------------------------- faces


def draw_face(
    seed: int, index: int, category: Literal["face", "control_face"] = "face"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Face ``index``: a monkey-like face turned (yaw shifts the features sideways and
    narrows the far eye), tilted, gazing somewhere, in one of ``EXPRESSIONS`` (cycling)."""
    rng = _rng(seed, category, index)
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    expression = EXPRESSIONS[index % len(EXPRESSIONS)]
    fur, skin = _natural_color(rng), _shade((214, 160, 140), u(0.8, 1.1))
    rx, ry, yaw, tilt = u(58, 72), u(70, 88), u(-0.35, 0.35), u(-0.4, 0.4)
    gaze = (u(-3, 3), u(-2, 2))
    ct, st = math.cos(tilt), math.sin(tilt)

    def rot(p: Point) -> Point:
        return (p[0] * ct - p[1] * st, p[0] * st + p[1] * ct)

    def at(x: float, y: float) -> Point:  # a feature on the face, turned by the yaw
        return rot((x * (1 - abs(yaw) * 0.5) + yaw * rx * 0.6, y))

    d = _Drawing()
    for side in (-1, 1):  # ears behind the head, the far one hidden as the face turns
        d.circle(rot((side * rx * 0.95 - yaw * rx * 0.3, -10)), u(14, 22), _shade(fur, 0.85))
    d.ellipse(rot((0, 0)), rx, ry, tilt, fur)
    d.ellipse(at(0, 18), rx * 0.68, ry * 0.62, tilt, skin)
    dark = (40, 30, 30)
    brow = {"neutral": 0.0, "open_mouth": -0.35, "lip_smack": 0.15, "fear_grin": 0.3}[expression]
    for side in (-1, 1):
        scale = 1.0 - 0.35 * max(0.0, side * yaw) / 0.35  # the far eye narrows
        eye = at(side * 24, -12)
        d.ellipse(eye, 11 * scale, 7, tilt, (235, 230, 220))
        d.circle((eye[0] + gaze[0] * scale, eye[1] + gaze[1]), 4.5 * scale, dark)
        d.capsule(
            at(side * 12, -26 + brow * 6), at(side * 36, -26 - brow * 6), 5, _shade(fur, 0.55)
        )
    d.ellipse(at(0, 22), 16, 11, tilt, _shade(skin, 0.9))  # muzzle
    for side in (-1, 1):
        d.circle(at(side * 5, 20), 2.5, dark)  # nostrils
    if expression == "neutral":
        d.capsule(at(-14, 44), at(14, 44), 3.5, dark)
    elif expression == "open_mouth":  # the threat face
        d.ellipse(at(0, 46), 15, 11, tilt, dark)
    elif expression == "lip_smack":
        d.ellipse(at(0, 44), 7, 5, tilt, _shade(skin, 0.6))
    else:  # fear grin: bared teeth
        d.ellipse(at(0, 44), 18, 7, tilt, dark)
        d.ellipse(at(0, 43), 15, 4, tilt, (240, 235, 220))
    params = {
        "expression": expression,
        "yaw": yaw,
        "tilt": tilt,
        "gaze": list(gaze),
        "fur": list(fur),
        "skin": list(skin),
    }
    return d.render(scale=1.0), params


def generate_faces(
    n: int, seed: int, category: Literal["face", "control_face"] = "face"
) -> list[Stimulus]:
    """``n`` faces (ids ``face_0000``...), or control faces with ``category``."""
    return [
        Stimulus(f"{category}_{i:04d}", category, *_swap(draw_face(seed, i, category)))
        for i in range(n)
    ]


# --------------------------------------------------------------------------- silhouettes
