"""Procedural scenes with captions: MPI3D's factor structure, rendered in pure jax.numpy.

A stand-in for the MPI3D-Complex and Causal3DIdent image–text experiments of Cai et al. (arXiv 2504.10143).

One object per image on a coloured background. Discrete factors (`DISCRETE`) appear in both the image and
the caption; continuous factors (`CONTINUOUS`) only in the image; the caption template index (`template`)
only in the text. Ranges of the continuous factors, as `sample_factors` draws them:

- `pos_x` in [0, 1): horizontal position, 0 = left edge of the usable area, 1 = right edge;
- `pos_y` in [-0.5, 0.5): vertical offset inside the height band, in band widths (scaled by
  `BAND_JITTER`, so neighbouring bands never overlap);
- `rotation` in [0, `max_rotation`) (default 2π): counter-clockwise rotation of the shape in radians.

Images are float32 (n, H, W, 3) in [0, 1]; y points up, so height "high" is the top of the image. Captions
are token rows `[sot] words [eot] pad...` with `mmjax.data.tokenizer`'s special ids, built on device from
traced 0/1 masks so selection/perturbation settings can be vmapped. Every array function is jitted with
`cfg` (and shapes) static.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, WordTokenizer, content_ids

DISCRETE = ("colour", "shape", "size", "height", "background")
CONTINUOUS = ("pos_x", "pos_y", "rotation")

# Object colours and background colours are disjoint sets of words, so a caption is never ambiguous.
COLOUR_RGB = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.20, 0.80),
    "orange": (1.00, 0.55, 0.05),
    "cyan": (0.10, 0.80, 0.85),
    "brown": (0.55, 0.33, 0.15),
}
BACKGROUND_RGB = {
    "dark": (0.08, 0.08, 0.10),
    "grey": (0.50, 0.50, 0.50),
    "pale": (0.88, 0.88, 0.82),
    "navy": (0.08, 0.10, 0.32),
    "sand": (0.76, 0.70, 0.50),
}
SHAPES = ("square", "circle", "triangle", "cross", "star", "ring")

# Geometry in fractions of the image side. Object centres stay in [MARGIN, 1 - MARGIN], so the largest
# shape at any rotation stays (almost) inside the frame.
MARGIN = 0.24
SIZE_RANGE = (0.12, 0.18)  # half-extent of the smallest and largest size value
BAND_JITTER = 0.6  # pos_y spans this fraction of a height band, leaving gaps between bands

# A template is a sequence of parts (attribute or None, words); "{}" marks the value word. An attribute's
# part is dropped as a whole when the attribute is unselected; None parts are always kept.
TEMPLATES = (
    ((None, "a"), ("size", "{}"), ("colour", "{}"), ("shape", "{}"), ("height", "at {} height"),
     ("background", "on a {} background")),
    ((None, "there is a"), ("colour", "{}"), ("shape", "{}"), ("size", "of {} size"), ("height", "placed {}"),
     ("background", "in front of a {} wall")),
    (("background", "on a {} background"), (None, "the"), ("shape", "{}"), ("colour", "is {}"),
     ("size", "and {}"), ("height", "at the {} level")),
    ((None, "the image shows a"), ("shape", "{}"), ("height", "at {} height"), ("colour", "with {} colour"),
     ("size", "of {} size"), ("background", "over a {} backdrop")),
)

_WORD = re.compile(r"[a-z]+")


def template_words() -> list[str]:
    """Filler words of all templates, deduplicated in order of first appearance."""
    words: dict[str, None] = {}
    for template in TEMPLATES:
        for _, text in template:
            words.update((w, None) for w in text.split() if w != "{}")
    return list(words)


@dataclass(frozen=True)
class SceneConfig:
    """Value words of each discrete factor, image size, edge softness and the optional causal links."""

    image_size: int = 64
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    shapes: tuple[str, ...] = ("square", "circle", "triangle", "cross")
    sizes: tuple[str, ...] = ("small", "large")  # ordinal: smallest first
    heights: tuple[str, ...] = ("low", "middle", "high")  # ordinal: bottom band first
    backgrounds: tuple[str, ...] = ("dark", "grey", "pale")
    causal: bool = False
    causal_strength: float = 0.8  # probability that a caused factor follows its cause (causal mode only)
    antialias: float = 1.0  # width in pixels of the smoothstep edge; 0 gives hard edges
    # Rotations are drawn from [0, max_rotation). Below the smallest symmetry angle of the shapes (90° for
    # square and cross, 120° triangle, 72° star) the rotation is identifiable from the image, except the
    # circle's and the ring's.
    max_rotation: float = 2 * math.pi

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ValueError(f"image_size={self.image_size!r} is invalid: must be an int >= 16")
        allowed = {"colours": tuple(COLOUR_RGB), "shapes": SHAPES, "backgrounds": tuple(BACKGROUND_RGB)}
        minimum = {"colours": 4, "shapes": 4, "sizes": 2, "heights": 3, "backgrounds": 3}
        taken = set(template_words())  # a value word must not be mistaken for filler or another value
        for name, least in minimum.items():
            values = getattr(self, name)
            if not isinstance(values, tuple) or len(values) < least or len(set(values)) != len(values):
                raise ValueError(f"{name}={values!r} is invalid: need a tuple of >= {least} distinct words")
            if name in allowed and not set(values) <= set(allowed[name]):
                raise ValueError(f"{name}={values!r} is invalid: each must be one of "
                                 f"{', '.join(allowed[name])}")
            if not all(isinstance(v, str) and _WORD.fullmatch(v) for v in values):
                raise ValueError(f"{name}={values!r} is invalid: each must be one lowercase word (a-z)")
            if clash := sorted(taken & set(values)):
                raise ValueError(f"{name}={values!r} is invalid: {clash} taken by a template or other factor")
            taken |= set(values)
        if not 0 <= self.causal_strength <= 1:
            raise ValueError(f"causal_strength={self.causal_strength!r} is invalid: must be in [0, 1]")
        if not 0 < self.max_rotation <= 2 * math.pi:
            raise ValueError(f"max_rotation={self.max_rotation!r} is invalid: must be in (0, 2π]")
        if not 0 <= self.antialias < math.inf:
            raise ValueError(f"antialias={self.antialias!r} is invalid: must be a finite number >= 0")

    def values(self, factor: str) -> tuple[str, ...]:
        """The value words of a discrete factor, in index order."""
        return getattr(self, {"colour": "colours", "shape": "shapes", "size": "sizes", "height": "heights",
                              "background": "backgrounds"}[factor])

    @property
    def n_values(self) -> tuple[int, ...]:
        """Number of values of each factor in DISCRETE."""
        return tuple(len(self.values(f)) for f in DISCRETE)


# ------------------------------------------------------------------------------------------------ sampling
@functools.partial(jax.jit, static_argnames=("n", "cfg"))
def sample_factors(key: jax.Array, n: int, cfg: SceneConfig) -> dict[str, jax.Array]:
    """Draw n scenes: int32 discrete factors and `template`, float32 continuous factors (module doc ranges).

    Independent mode: every factor uniform and independent. Causal mode adds two links, each followed with
    probability `cfg.causal_strength` (otherwise the uniform draw is kept):
    colour = floor(pos_x * n_colours), so each colour owns a vertical strip of the image (the colour
    marginal stays uniform); size = stochastic rounding of height * (n_sizes - 1) / (n_heights - 1), so
    higher objects are larger (P(size = large | height) grows linearly with height).
    """
    k = jax.random.split(key, 11)
    n_colour, n_shape, n_size, n_height, n_background = cfg.n_values

    def randint(k_i: jax.Array, m: int) -> jax.Array:
        return jax.random.randint(k_i, (n,), 0, m, dtype=jnp.int32)

    out = {
        "colour": randint(k[0], n_colour),
        "shape": randint(k[1], n_shape),
        "size": randint(k[2], n_size),
        "height": randint(k[3], n_height),
        "background": randint(k[4], n_background),
        "pos_x": jax.random.uniform(k[5], (n,)),
        "pos_y": jax.random.uniform(k[6], (n,), minval=-0.5, maxval=0.5),
        "rotation": jax.random.uniform(k[7], (n,), maxval=cfg.max_rotation),
        "template": randint(k[8], len(TEMPLATES)),
    }
    if cfg.causal:
        follow = jax.random.uniform(k[9], (n, 2)) < cfg.causal_strength
        strip = jnp.minimum(jnp.floor(out["pos_x"] * n_colour), n_colour - 1).astype(jnp.int32)
        out["colour"] = jnp.where(follow[:, 0], strip, out["colour"])
        target = out["height"] * ((n_size - 1) / (n_height - 1))
        rounded = jnp.floor(target + jax.random.uniform(k[10], (n,))).astype(jnp.int32)
        out["size"] = jnp.where(follow[:, 1], jnp.minimum(rounded, n_size - 1), out["size"])
    return out


# ------------------------------------------------------------------------------------------------ rendering
def _length(x: jax.Array, y: jax.Array) -> jax.Array:
    # Plain sqrt instead of jnp.hypot: distances are a few pixels, so hypot's overflow guard (a division
    # per pixel) only costs time, about a third of the render.
    return jnp.sqrt(x * x + y * y)


# Signed distances in pixels (negative inside), y up, centred shapes; `r` is the shape's half-extent.
def _sd_box(x: jax.Array, y: jax.Array, bx: jax.Array, by: jax.Array) -> jax.Array:
    dx, dy = jnp.abs(x) - bx, jnp.abs(y) - by
    return _length(jnp.maximum(dx, 0), jnp.maximum(dy, 0)) + jnp.minimum(jnp.maximum(dx, dy), 0)


def _sd_square(x: jax.Array, y: jax.Array, r: jax.Array) -> jax.Array:
    return _sd_box(x, y, 0.85 * r, 0.85 * r)  # 0.85 brings its area close to the circle's


def _sd_circle(x: jax.Array, y: jax.Array, r: jax.Array) -> jax.Array:
    return _length(x, y) - r


def _sd_triangle(x: jax.Array, y: jax.Array, r: jax.Array) -> jax.Array:
    # Inigo Quilez's equilateral triangle (apex up, centroid at 0) with circumradius 1.3 r.
    k = math.sqrt(3.0)
    half_side = 1.3 * r * k / 2
    x = jnp.abs(x) - half_side
    y = y + half_side / k
    fold = x + k * y > 0
    x, y = jnp.where(fold, (x - k * y) / 2, x), jnp.where(fold, (-k * x - y) / 2, y)
    x = x - jnp.clip(x, -2 * half_side, 0)
    return -_length(x, y) * jnp.sign(y)


def _sd_cross(x: jax.Array, y: jax.Array, r: jax.Array) -> jax.Array:
    # The union (min) of two bars is exact outside and near the edge, which is all antialiasing reads.
    return jnp.minimum(_sd_box(x, y, r, 0.35 * r), _sd_box(x, y, 0.35 * r, r))


def _sd_star(x: jax.Array, y: jax.Array, r: jax.Array) -> jax.Array:
    # Inigo Quilez's five-pointed star, outer radius 1.2 r, inner/outer ratio 0.5.
    k1x, k1y = 0.809016994375, -0.587785252292
    outer, ratio = 1.2 * r, 0.5
    x = jnp.abs(x)
    d = jnp.maximum(k1x * x + k1y * y, 0)
    x, y = x - 2 * d * k1x, y - 2 * d * k1y
    d = jnp.maximum(-k1x * x + k1y * y, 0)
    x, y = x + 2 * d * k1x, y - 2 * d * k1y
    x, y = jnp.abs(x), y - outer
    bax, bay = -ratio * k1y, ratio * k1x - 1
    h = jnp.clip((x * bax + y * bay) / (bax**2 + bay**2), 0, outer)
    return _length(x - bax * h, y - bay * h) * jnp.sign(y * bax - x * bay)


def _sd_ring(x: jax.Array, y: jax.Array, r: jax.Array) -> jax.Array:
    return jnp.abs(_length(x, y) - 0.75 * r) - 0.3 * r


_SDF = {"square": _sd_square, "circle": _sd_circle, "triangle": _sd_triangle, "cross": _sd_cross,
        "star": _sd_star, "ring": _sd_ring}


@functools.partial(jax.jit, static_argnames=("cfg",))
def render(factors: dict[str, jax.Array], cfg: SceneConfig) -> jax.Array:
    """Images float32 (n, H, W, 3) in [0, 1] of `sample_factors` output (extra keys are ignored)."""
    s = cfg.image_size
    n_size, n_height = len(cfg.sizes), len(cfg.heights)

    def per_image(name: str) -> jax.Array:
        return jnp.asarray(factors[name])[:, None, None]  # broadcasts against the (H, W) pixel grid

    span = 1 - 2 * MARGIN
    band = span / n_height
    cx = (MARGIN + span * per_image("pos_x")) * s
    cy = (MARGIN + band * (per_image("height") + 0.5 + BAND_JITTER * per_image("pos_y"))) * s
    radius = (SIZE_RANGE[0] + (SIZE_RANGE[1] - SIZE_RANGE[0]) * per_image("size") / (n_size - 1)) * s
    theta = per_image("rotation")

    centres = jnp.arange(s, dtype=jnp.float32) + 0.5
    px = centres[None, None, :] - cx
    py = (s - centres)[None, :, None] - cy  # row 0 is the top, so y grows upwards
    # Rotating the sample points by -θ rotates the shape by +θ.
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    x, y = cos * px + sin * py, cos * py - sin * px

    shape = per_image("shape")
    dist = _SDF[cfg.shapes[0]](x, y, radius)
    # Every shape is evaluated everywhere and selected per image: a per-image switch would lower to the
    # same selects under vmap, and branch-free elementwise code vectorises well on every backend.
    for index, name in enumerate(cfg.shapes[1:], start=1):
        dist = jnp.where(shape == index, _SDF[name](x, y, radius), dist)

    if cfg.antialias > 0:
        t = jnp.clip(dist / cfg.antialias + 0.5, 0, 1)
        alpha = 1 - t * t * (3 - 2 * t)
    else:
        alpha = (dist < 0).astype(jnp.float32)

    colour_rgb = jnp.asarray([COLOUR_RGB[c] for c in cfg.colours], jnp.float32)
    background_rgb = jnp.asarray([BACKGROUND_RGB[b] for b in cfg.backgrounds], jnp.float32)
    fg = colour_rgb[jnp.asarray(factors["colour"])][:, None, None, :]
    bg = background_rgb[jnp.asarray(factors["background"])][:, None, None, :]
    return jnp.clip(bg + alpha[..., None] * (fg - bg), 0, 1)


# ------------------------------------------------------------------------------------------------ captions
def scene_vocab(cfg: SceneConfig) -> list[str]:
    """Token strings by id: the special tokens, the template words, then each factor's value words."""
    return [*SPECIAL_TOKENS, *template_words(), *(v for f in DISCRETE for v in cfg.values(f))]


def scene_tokenizer(cfg: SceneConfig) -> WordTokenizer:
    """A `WordTokenizer` with exactly the ids of `scene_vocab`, for saving with a checkpoint."""
    return WordTokenizer(scene_vocab(cfg)[len(SPECIAL_TOKENS):])


def caption_max_len(cfg: SceneConfig) -> int:
    """Token length of the longest full caption, sot and eot included."""
    return max(sum(len(text.split()) for _, text in template) for template in TEMPLATES) + 2


@functools.lru_cache(maxsize=32)
def _template_tables(cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per template and word position: filler id, attribute (-1 filler), is-value-slot; value id offsets."""
    index = {w: i for i, w in enumerate(scene_vocab(cfg))}
    length = caption_max_len(cfg) - 2
    ids = np.full((len(TEMPLATES), length), PAD_ID, np.int32)
    attribute = np.full((len(TEMPLATES), length), -2, np.int32)  # -2 marks padding past the template's end
    is_value = np.zeros((len(TEMPLATES), length), bool)
    for t, template in enumerate(TEMPLATES):
        words = [(part, w) for part, text in template for w in text.split()]
        for i, (part, word) in enumerate(words):
            attribute[t, i] = -1 if part is None else DISCRETE.index(part)
            is_value[t, i] = word == "{}"
            ids[t, i] = PAD_ID if word == "{}" else index[word]
    offsets = np.asarray([index[cfg.values(f)[0]] for f in DISCRETE], np.int32)
    return ids, attribute, is_value, offsets


@functools.partial(jax.jit, static_argnames=("cfg", "max_len"))
def caption_tokens(key: jax.Array, factors: dict[str, jax.Array], cfg: SceneConfig, selected: jax.Array,
                   perturbed: jax.Array, p_change: float | jax.Array = 0.9,
                   max_len: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Token rows int32 (n, max_len) of captions, and a record of what each caption states.

    `selected`/`perturbed` are 0/1 masks over DISCRETE, shape (5,) or per example (n, 5), and may be traced.
    An unselected attribute loses its whole phrase (value and filler words). A perturbed attribute's value
    word is, with probability `p_change` per example, redrawn uniformly over all values (the true one
    included). Record: `dropped` (n, 5) bool, `changed` (n, 5) bool (a stated value differs from the truth)
    and `text_values` (n, 5) int32, the values the caption states (-1 where dropped).
    """
    longest = caption_max_len(cfg)
    max_len = longest if max_len is None else max_len
    if max_len < longest:
        raise ValueError(f"max_len={max_len} is invalid: must be >= {longest}, the longest caption's length")
    ids, attribute, is_value, offsets = (jnp.asarray(a) for a in _template_tables(cfg))
    true = jnp.stack([jnp.asarray(factors[f], jnp.int32) for f in DISCRETE], axis=-1)
    n = true.shape[0]
    n_values = jnp.asarray(cfg.n_values, jnp.int32)

    k_change, k_value = jax.random.split(key)
    redraw = jax.random.uniform(k_change, (n, len(DISCRETE))) < p_change * (jnp.asarray(perturbed) > 0)
    drawn = jnp.minimum(jnp.floor(jax.random.uniform(k_value, (n, len(DISCRETE))) * n_values), n_values - 1)
    stated = jnp.where(redraw, drawn.astype(jnp.int32), true)
    dropped = jnp.broadcast_to(jnp.asarray(selected) <= 0, (n, len(DISCRETE)))

    template = jnp.asarray(factors["template"], jnp.int32)
    ids, attribute, is_value = ids[template], attribute[template], is_value[template]
    slot = jnp.maximum(attribute, 0)  # filler and padding positions gather attribute 0, then get masked
    words = jnp.where(is_value, jnp.take_along_axis(stated + offsets, slot, axis=1), ids)
    keep = (attribute == -1) | ((attribute >= 0) & ~jnp.take_along_axis(dropped, slot, axis=1))
    # A stable sort on "not kept" moves the kept words to the front in template order.
    order = jnp.argsort(~keep, axis=1, stable=True)
    count = keep.sum(axis=1, keepdims=True)
    positions = jnp.arange(ids.shape[1])
    body = jnp.where(positions < count, jnp.take_along_axis(words, order, axis=1), PAD_ID)
    tokens = jnp.concatenate([jnp.full((n, 1), BOS_ID, jnp.int32), body,
                              jnp.full((n, max_len - 1 - ids.shape[1]), PAD_ID, jnp.int32)], axis=1)
    tokens = jnp.where(jnp.arange(max_len) == count + 1, EOS_ID, tokens)
    record = {
        "dropped": dropped,
        "changed": (stated != true) & ~dropped,
        "text_values": jnp.where(dropped, -1, stated),
    }
    return tokens, record


def draw_scenes(key: jax.Array, n: int, cfg: SceneConfig, selected: jax.Array, perturbed: jax.Array,
                p_change: float | jax.Array, max_len: int | None = None
                ) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """n fresh scenes: (factors, rendered images, caption tokens) under the given caption bias
    (`caption_tokens`' masks, which may be traced)."""
    k_f, k_c = jax.random.split(key)
    factors = sample_factors(k_f, n, cfg)
    tokens, _ = caption_tokens(k_c, factors, cfg, selected, perturbed, p_change, max_len)
    return factors, render(factors, cfg), tokens


def caption_strings(tokens: jax.Array | np.ndarray, cfg: SceneConfig) -> list[str]:
    """Decode token rows to captions (special tokens removed, reading stops at eot)."""
    vocab = scene_vocab(cfg)
    return [" ".join(vocab[i] for i in content_ids(row)) for row in np.atleast_2d(np.asarray(tokens))]


def captions(factors: dict[str, jax.Array | np.ndarray], cfg: SceneConfig,
             selected: np.ndarray | None = None, perturbed: np.ndarray | None = None, p_change: float = 0.9,
             seed: int = 0) -> list[str]:
    """Caption strings of scenes; by default every attribute selected and none perturbed."""
    selected = np.ones(len(DISCRETE), np.int32) if selected is None else np.asarray(selected)
    perturbed = np.zeros(len(DISCRETE), np.int32) if perturbed is None else np.asarray(perturbed)
    factors = {k: jnp.asarray(v) for k, v in factors.items()}
    tokens, _ = caption_tokens(jax.random.key(seed), factors, cfg, selected, perturbed, p_change)
    return caption_strings(tokens, cfg)
