"""Validated configuration of one synthetic run, and its split into static/traced parts.

A run is the latent simulator, LpSimCLR training and the identifiability probes of Cai et al.
(arXiv 2504.10143). User-facing index sets are 1-based, as in the paper ([3] = {1, 2, 3}); codes are
the reference's 0-based graded-lexicographic codes (see `mmjax.latent.codes`, docs/design.md#subset-codes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.configs.common import _fail, parse_overrides
from mmjax.eval.downstream import METRICS
from mmjax.eval.identifiability import NONLINEAR_PROBES
from mmjax.latent import codes
from mmjax.latent.simulator import Bias, LatentShape, World, make_world
from mmjax.models.mlp import paper_widths

SCALES = ("smoke", "cpu", "paper")
LOSSES = ("lp_simclr", "simclr_cosine")
OUTPUT_NORMS = ("none", "batch_standardize", "batch_whiten")
EVAL_KINDS = ("identifiability", "downstream")
SCHEDULES = ("constant", "cosine")
TEXT_LAYOUTS = ("padded", "exact")


@dataclass(frozen=True)
class RunStatic:
    """Everything that fixes shapes or program structure; one compile per distinct value.

    No defaults: `SyntheticConfig.to_static()` is the one place its values come from, so the two
    cannot drift apart. `mmjax.train.synthetic.make_run(static)` builds the run it describes.
    """

    shape: LatentShape
    widths_x: tuple[int, ...]
    widths_t: tuple[int, ...]
    enc_dim: int
    batch: int
    steps: int
    loss: str
    output_norm: str
    schedule: str
    log_every: int
    eval_fit: int
    eval_test: int
    nonlinear_probe: str
    kernel_ridge_max: int
    nystrom_landmarks: int
    compare_probe: str
    probe_epochs: int
    eval_tilde: bool
    swap_batches: bool
    eval_kind: str

    def draw_world(self, key: jax.Array) -> World:
        """The per-seed world (covariances, DAG, mixings) shared by every setting of a seed."""
        return make_world(key, self.shape)


class RunParams(NamedTuple):
    """Per-run traced values (stacked along the sweep axis)."""

    bias: Bias
    enc_mask: jax.Array  # (enc_dim,) 0/1: which output dims are in use (the encoding size)
    lr: jax.Array
    tau: jax.Array
    alpha: jax.Array
    clip_norm: jax.Array


def target_names(shape: LatentShape, with_tilde: bool = True) -> list[str]:
    """Names of the evaluation targets, in the order of a run result's last axis."""
    s = [f"s{i + 1}" for i in range(shape.n_s)]
    st = [f"s_tilde{i + 1}" for i in range(shape.n_s)] if with_tilde else []
    return s + st + ["s_unbiased", "m_x", "m_t"]


@dataclass(frozen=True)
class SyntheticConfig:
    """One run of the numeric study. Shapes are static; everything else is traced and vmappable."""

    # latent model
    n_s: int = 10
    n_x: int = 5
    n_t: int = 5
    theta: tuple[int, ...] | None = None  # 1-based selected indices; None = all (or theta_code)
    theta_code: int | None = None
    rho: tuple[int, ...] = ()  # 1-based perturbed indices (or rho_code)
    rho_code: int | None = None
    p_change: float = 0.75
    dependent: bool = False
    causal: bool = False
    reference_cov: bool = True
    mixing_layers: int = 3
    cond_samples: int = 25_000
    cond_rank: int = 25
    text_layout: str = "padded"
    # encoders and training
    encoding_size: int | None = None  # None = |theta| - |rho|
    widths: str = "64,64"  # comma-separated hidden widths, or "paper" ([10d, 50d x4, 10d])
    batch: int = 256
    steps: int = 10_000
    lr: float = 1e-2
    schedule: str = "cosine"
    clip_norm: float = 2.0
    tau: float = 1.0
    alpha: float = 0.5
    loss: str = "lp_simclr"
    output_norm: str = "batch_standardize"
    swap_batches: bool = True  # LpSimCLR: also use the second batch's pairs as anchors
    log_every: int = 100
    # evaluation
    eval_fit: int = 4096
    eval_test: int = 4096
    nonlinear_probe: str = "mlp"  # or "nystrom" (fast), "kernel_ridge" (exact, first kernel_ridge_max rows)
    kernel_ridge_max: int = 2048
    nystrom_landmarks: int = 512
    # A second non-linear probe evaluated on the same features, reported as r2_compare ("" for none).
    compare_probe: str = ""
    probe_epochs: int = 200  # the MLP probe's max epochs (sklearn's max_iter)
    eval_tilde: bool = True  # also regress each s~_i (reported for perturbed i)
    eval_kind: str = "identifiability"  # or "downstream": ID/OOD probes of the image representation
    _theta_set: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)
    _rho_set: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("n_s", "n_x", "n_t", "mixing_layers", "batch", "steps", "log_every",
                     "eval_fit", "eval_test", "cond_samples", "cond_rank", "kernel_ridge_max",
                     "nystrom_landmarks", "probe_epochs"):
            if int(getattr(self, name)) < 1:
                _fail(name, getattr(self, name), "must be a positive integer")
        if self.cond_rank > self.cond_samples:
            _fail("cond_rank", self.cond_rank, f"must be at most cond_samples={self.cond_samples}")
        if self.log_every > self.steps:
            _fail("log_every", self.log_every, f"must be at most steps={self.steps}")
        if self.batch < 2:
            _fail("batch", self.batch, "must be at least 2 (negatives come from the batch)")
        theta = self._resolve_set("theta", self.theta, self.theta_code, allow_empty=False)
        rho = self._resolve_set("rho", self.rho, self.rho_code, allow_empty=True)
        if not set(rho) < set(theta):
            name, value = ("rho_code", self.rho_code) if self.rho_code is not None else ("rho", self.rho)
            _fail(name, value, f"the perturbed set must be a proper subset of theta={theta} (1-based)")
        object.__setattr__(self, "_theta_set", theta)
        object.__setattr__(self, "_rho_set", rho)
        if self.encoding_size is not None and not 1 <= self.encoding_size <= self.n_s:
            _fail("encoding_size", self.encoding_size, f"must be in 1..n_s={self.n_s} or None")
        if not 0.0 <= self.p_change <= 1.0:
            _fail("p_change", self.p_change, "must be a probability in [0, 1]")
        for name in ("lr", "tau", "clip_norm"):
            if not getattr(self, name) > 0:
                _fail(name, getattr(self, name), "must be > 0")
        if not 0.0 <= self.alpha <= 1.0:
            _fail("alpha", self.alpha, "must be in [0, 1]")
        for name, allowed in (("schedule", SCHEDULES), ("loss", LOSSES),
                              ("output_norm", OUTPUT_NORMS), ("nonlinear_probe", NONLINEAR_PROBES),
                              ("text_layout", TEXT_LAYOUTS),
                              ("eval_kind", EVAL_KINDS)):
            if getattr(self, name) not in allowed:
                _fail(name, getattr(self, name), f"allowed: {', '.join(allowed)}")
        if self.compare_probe and (self.compare_probe not in NONLINEAR_PROBES
                                   or self.compare_probe == self.nonlinear_probe):
            others = [p for p in NONLINEAR_PROBES if p != self.nonlinear_probe]
            _fail("compare_probe", self.compare_probe, f"allowed: '' (none), {', '.join(others)}")
        if self.compare_probe and self.eval_kind != "identifiability":
            _fail("compare_probe", self.compare_probe, "needs eval_kind='identifiability'")
        if self.reference_cov and self.dependent and self.n_x != self.n_t:
            _fail("reference_cov", True, "the shared draw Σ_mt = Σ_mx needs n_x == n_t")
        self.hidden_widths(self.n_s + self.n_x)

    def _resolve_set(self, name: str, indices, code, allow_empty: bool) -> tuple[int, ...]:
        """0-based sorted indices from a 1-based index list or a graded-lexicographic code."""
        if code is not None:
            if indices not in (None, ()):
                _fail(f"{name}_code", code, f"give either {name} or {name}_code, not both")
            lowest = codes.EMPTY_CODE if allow_empty else 0
            if not lowest <= code < codes.num_subset_codes(self.n_s):
                _fail(f"{name}_code", code,
                      f"allowed {lowest}..{codes.num_subset_codes(self.n_s) - 1} for n_s={self.n_s}")
            return codes.subset_from_code(code, self.n_s)
        if indices is None:
            return tuple(range(self.n_s))
        values = tuple(int(i) for i in indices)
        if not values and not allow_empty:
            _fail(name, indices, "must select at least one semantic index")
        bad = [i for i in values if not 1 <= i <= self.n_s]
        if bad:
            _fail(name, indices, f"indices are 1-based and must lie in 1..n_s={self.n_s}")
        if len(set(values)) != len(values):
            _fail(name, indices, "indices must be distinct")
        return tuple(sorted(i - 1 for i in values))

    @property
    def theta_set(self) -> tuple[int, ...]:
        """0-based selected indices."""
        return self._theta_set

    @property
    def rho_set(self) -> tuple[int, ...]:
        """0-based perturbed indices."""
        return self._rho_set

    @property
    def n_unbiased(self) -> int:
        """|I_theta \\ I_rho|: the default encoding size."""
        return len(self._theta_set) - len(self._rho_set)

    @property
    def code_theta(self) -> int:
        """The reference's code for theta."""
        return codes.code_from_subset(self._theta_set, self.n_s)

    @property
    def code_rho(self) -> int:
        """The reference's code for rho (-1 = empty)."""
        return codes.code_from_subset(self._rho_set, self.n_s)

    def hidden_widths(self, input_dim: int) -> tuple[int, ...]:
        """Hidden widths of an encoder with this input dimension."""
        if self.widths == "paper":
            return paper_widths(input_dim)
        try:
            out = tuple(int(w) for w in str(self.widths).split(",") if w.strip())
        except ValueError:
            out = ()
        if not out or min(out) < 1:
            _fail("widths", self.widths, "comma-separated positive integers, or 'paper'")
        return out

    def role(self, index: int) -> str:
        """Role of 0-based semantic index: unbiased, omitted or perturbed."""
        if index not in self._theta_set:
            return "omitted"
        return "perturbed" if index in self._rho_set else "unbiased"

    def to_static(self) -> RunStatic:
        """The static (shape-fixing) half of this config."""
        shape = self.latent_shape()
        enc_dim = self.n_s if self.text_layout == "padded" else (
            self.encoding_size or self.n_unbiased)
        return RunStatic(
            shape=shape,
            widths_x=self.hidden_widths(shape.x_dim),
            widths_t=self.hidden_widths(shape.t_dim),
            enc_dim=enc_dim, batch=self.batch, steps=self.steps, loss=self.loss,
            output_norm=self.output_norm, schedule=self.schedule, log_every=self.log_every,
            eval_fit=self.eval_fit, eval_test=self.eval_test,
            nonlinear_probe=self.nonlinear_probe, kernel_ridge_max=self.kernel_ridge_max,
            nystrom_landmarks=self.nystrom_landmarks, compare_probe=self.compare_probe,
            probe_epochs=self.probe_epochs, eval_tilde=self.eval_tilde,
            swap_batches=self.swap_batches, eval_kind=self.eval_kind,
        )

    def latent_shape(self) -> LatentShape:
        """Static sizes of the latent model."""
        slots = self.n_s if self.text_layout == "padded" else len(self._theta_set)
        return LatentShape(n_s=self.n_s, n_x=self.n_x, n_t=self.n_t, text_slots=slots,
                           mixing_layers=self.mixing_layers, cond_samples=self.cond_samples,
                           cond_rank=self.cond_rank)

    def to_params(self) -> RunParams:
        """The traced half of this config."""
        theta = np.zeros(self.n_s, np.float32)
        theta[list(self._theta_set)] = 1
        rho = np.zeros(self.n_s, np.float32)
        rho[list(self._rho_set)] = 1
        enc_dim = self.to_static().enc_dim
        enc_mask = (np.arange(enc_dim) < (self.encoding_size or self.n_unbiased)).astype(np.float32)
        f = lambda v: jnp.asarray(v, jnp.float32)
        return RunParams(
            bias=Bias(theta=f(theta), rho=f(rho), p_change=f(self.p_change),
                      dependent=f(self.dependent), causal=f(self.causal),
                      reference_cov=f(self.reference_cov)),
            enc_mask=f(enc_mask), lr=f(self.lr), tau=f(self.tau), alpha=f(self.alpha),
            clip_norm=f(self.clip_norm),
        )

    def result_rows(self, res) -> list[dict]:
        """results.csv rows of one run (a RunResult): one per encoder and reported factor.

        Identifiability runs report every s_i with its role, each perturbed s̃_i, the unbiased block
        and m_x, m_t, for both encoders; downstream runs report downstream.METRICS (image encoder).
        """
        if self.eval_kind == "downstream":
            names, encoders = list(METRICS), ("x",)
            wanted = [(m, "downstream") for m in METRICS]
        else:
            names, encoders = target_names(self.latent_shape(), self.eval_tilde), ("x", "t")
            wanted = [(f"s{i + 1}", self.role(i)) for i in range(self.n_s)]
            wanted += [(f"s_tilde{i + 1}", "perturbed") for i in self._rho_set]
            wanted += [("s_unbiased", "unbiased"), ("m_x", "specific"), ("m_t", "specific")]
            wanted = [(n, r) for n, r in wanted if n in names]
        compare = lambda e, name: ({"r2_compare": float(res.r2_compare[e, names.index(name)])}
                                   if self.compare_probe else {})
        return [{"encoder": enc, "factor": name, "role": role, "n_theta": len(self._theta_set),
                 "n_rho": len(self._rho_set),
                 "r2_linear": float(res.r2_linear[e, names.index(name)]),
                 "r2_nonlinear": float(res.r2_nonlinear[e, names.index(name)]),
                 **compare(e, name)}
                for e, enc in enumerate(encoders) for name, role in wanted]

    def with_overrides(self, overrides: dict[str, str]) -> SyntheticConfig:
        """This config with `--set`-style strings applied (validated)."""
        return apply_overrides(self, overrides)

    def to_dict(self) -> dict:
        """Plain dict of the user-facing fields (for sweep.json)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        out["theta_resolved"] = [i + 1 for i in self._theta_set]
        out["rho_resolved"] = [i + 1 for i in self._rho_set]
        return out


def apply_overrides(cfg: SyntheticConfig, overrides: dict[str, str]) -> SyntheticConfig:
    """Return cfg with `field=value` strings applied (the CLI's --set), validated."""
    updates = parse_overrides(cfg, overrides)
    if "theta" in updates:
        updates.setdefault("theta_code", None)
    if "rho" in updates:
        updates.setdefault("rho_code", None)
    if "theta_code" in updates and updates["theta_code"] is not None:
        updates.setdefault("theta", None)
    if "rho_code" in updates and updates["rho_code"] is not None:
        updates.setdefault("rho", ())
    return dataclasses.replace(cfg, **updates)
