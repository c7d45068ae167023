"""The invariance measurement pipeline: curve embeddings → per identity × attribute × param energy rows.

Two entry points share one code path: :func:`invariance_rows` measures in-memory embeddings (what
:class:`~fr_invariance.evaluation.probe.EnergyProbe` embeds) and :func:`measure_invariance_from_embeddings`
precomputed embeddings in the paper layout (:class:`~fr_invariance.data.paper_format.PaperEmbeddings`).

Per identity, the scale d̄ is :func:`~fr_invariance.metrics.energy.mean_pair_distance` over ALL of that
identity's embedded images (seeded, shared by every attribute); per attribute, positions are the centre
embeddings and vectors ``e(step 2) − e(step 0)`` (DESIGN §5); the magnitude is the mean over curves of
``d_X(e(step 0), e(step 2)) / d̄``.

With ``EnergySettings(exact_repro=True)`` the measurement over identities replays the authors' released
script (:mod:`fr_invariance.metrics.exact_repro`): one pair of random streams seeded once per call,
identities in sorted file-name order, attributes in the script's order, every draw where the script
makes it. The default mode seeds every identity's draws on its own (adding an identity changes no other).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from fr_invariance.attributes import ATTRIBUTE_NAMES, validate_attributes
from fr_invariance.data.paper_format import PaperEmbeddings
from fr_invariance.errors import ConfigurationError
from fr_invariance.metrics.energy import (
    alignment_energy,
    displacement_magnitude,
    mean_pair_distance,
    null_energy,
    zero_rows,
)
from fr_invariance.metrics.exact_repro import SCRIPT_DIMENSIONS, ScriptStreams, script_curve_selection, script_scale
from fr_invariance.synth.designs import MOVING_DIMENSION, curve_indices

INVARIANCE_COLUMNS: tuple[str, ...] = (
    "run", "epoch", "identity", "attribute", "neighbourhood", "param",
    "energy", "magnitude", "n_points", "mean_degree", "n_isolated", "n_zero",
)
"""Columns of every invariance table, in order (plus ``null_energy`` when the null baseline is on)."""

NEIGHBOURHOODS: tuple[str, ...] = ("ball", "knn", "inverse_distance")
IDENTITY_ORDERS: tuple[str, ...] = ("sorted", "listing")


class InvarianceConfigError(ConfigurationError):
    """An invalid measurement setting (neighbourhood, params, cache folder, curve table...)."""


@dataclass(frozen=True)
class EnergySettings:
    """How energies are measured (DESIGN §5).

    Attributes:
        neighbourhood: ``"ball"`` (params = ε, multiples of d̄), ``"knn"`` (params = k) or
            ``"inverse_distance"`` (params ignored; one row per attribute with ``param`` NaN).
        params: ε (> 0) or k (integers >= 1) values; one row per value.
        n_pairs: random pairs for the per-identity scale d̄.
        seed: seed of d̄'s pairs, of the neighbour cap and of the null vectors (exact mode: the seed of
            ``random.seed(seed); np.random.seed(seed)`` before the script's loop).
        null_baseline: also measure isotropic random vectors on the same graph (column ``null_energy``).
        exact_repro: reproduce the authors' released ``energy_finetuning_ball.py`` (ball and cosine only,
            no null baseline): see :mod:`fr_invariance.metrics.exact_repro`.
        max_neighbours: ball only: keep at most this many random neighbours per point (the script's
            ``subsample``; it ran with 100). None: no cap.
        max_curves: exact mode only: the script's ``max_curves`` (its Python-``random`` shuffle picks
            that many curves per attribute). None: all curves.
        identity_order: exact mode only: the order in which identities consume the script's streams:
            ``"sorted"`` (file names sorted, DESIGN §5) or ``"listing"`` (the directory's ``os.listdir``
            order, which the script walks: the same numbers as the script run on that same filesystem).
    """

    neighbourhood: str = "ball"
    params: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0)
    n_pairs: int = 10_000
    seed: int = 0
    null_baseline: bool = False
    exact_repro: bool = False
    max_neighbours: int | None = None
    max_curves: int | None = None
    identity_order: str = "sorted"

    def __post_init__(self) -> None:
        if self.neighbourhood not in NEIGHBOURHOODS:
            raise InvarianceConfigError(
                f"Unknown neighbourhood {self.neighbourhood!r}; use one of {', '.join(NEIGHBOURHOODS)}."
            )
        params = tuple(float(p) for p in (self.params or ()))
        if self.neighbourhood == "inverse_distance":
            params = ()
        elif not params or min(params) <= 0:
            what = "every ε > 0, the radius in multiples of d̄" if self.neighbourhood == "ball" else "every k >= 1"
            raise InvarianceConfigError(
                f"energy.params: {self.neighbourhood} needs at least one positive param ({what}); "
                f"got {list(self.params or ())}."
            )
        elif self.neighbourhood == "knn" and any(p != int(p) for p in params):
            raise InvarianceConfigError(f"knn params are neighbour counts k and must be integers, got {list(params)}.")
        if self.n_pairs < 1:
            raise InvarianceConfigError(f"n_pairs must be positive, got {self.n_pairs}.")
        for name in ("max_neighbours", "max_curves"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise InvarianceConfigError(f"energy.{name} must be an integer >= 1 or null, got {value!r}.")
            object.__setattr__(self, name, None if value is None else int(value))
        if self.max_neighbours is not None and self.neighbourhood != "ball":
            raise InvarianceConfigError(
                f"energy.max_neighbours caps ball rows only; it does not apply to neighbourhood={self.neighbourhood}."
            )
        if self.exact_repro and self.neighbourhood != "ball":
            raise InvarianceConfigError(
                f"energy.exact_repro reproduces the authors' ball script only; use energy.neighbourhood=ball "
                f"(got {self.neighbourhood})."
            )
        if self.exact_repro and self.null_baseline:
            raise InvarianceConfigError("energy.exact_repro reproduces the authors' script, which has no null "
                                        "baseline; set energy.null_baseline=false.")
        if self.max_curves is not None and not self.exact_repro:
            raise InvarianceConfigError("energy.max_curves is the released script's curve subsampling; it needs "
                                        "energy.exact_repro=true (choose the number of curves in the design instead).")
        if self.identity_order not in IDENTITY_ORDERS:
            raise InvarianceConfigError(
                f"energy.identity_order must be one of {', '.join(IDENTITY_ORDERS)}, got {self.identity_order!r}.")
        if self.identity_order != "sorted" and not self.exact_repro:
            raise InvarianceConfigError("energy.identity_order orders the released script's random streams; it needs "
                                        "energy.exact_repro=true (the default mode's draws do not depend on order).")
        object.__setattr__(self, "params", params)

    def energy_params(self) -> list[float | int]:
        """Params in the form ``alignment_energy`` expects (ints for knn)."""
        return [int(p) for p in self.params] if self.neighbourhood == "knn" else list(self.params)

    def param_label(self, param: float | None) -> str:
        """Short label of one param for metric names: ``0.6`` (ball), ``k10`` (knn), ``invdist``."""
        if self.neighbourhood == "knn":
            return f"k{int(param)}"
        if self.neighbourhood == "inverse_distance":
            return "invdist"
        return f"{param:g}"


def identity_names(n_identities: int) -> list[str]:
    """File-stem names of the first ``n_identities`` held-out identities: ``id_00000``, ``id_00001``, ..."""
    return [f"id_{k:05d}" for k in range(n_identities)]


def declared_metric(model: nn.Module) -> str:
    """The position metric d_X the backbone declares (``backbone.metric``)."""
    metric = getattr(model, "metric", None)
    if metric not in ("cosine", "euclidean"):
        raise InvarianceConfigError(
            f"{type(model).__name__} declares no position metric (backbone.metric = {metric!r}); "
            "backbones must set metric = 'cosine' or 'euclidean'."
        )
    return metric


def table_attributes(table: pd.DataFrame, attributes: Sequence[str] | None = None) -> list[str]:
    """Attributes to measure: ``attributes`` (validated, each must have curves in ``table``) or all present."""
    attribute_of_label = {label: name for name, label in MOVING_DIMENSION.items()}
    labels = set(table["moving_dimension"].astype(str).unique())
    unknown = sorted(labels - set(attribute_of_label))
    if unknown:
        raise InvarianceConfigError(
            f"Curve table has unknown moving_dimension label(s) {unknown}; known: {sorted(attribute_of_label)}."
        )
    present = [name for name in ATTRIBUTE_NAMES if MOVING_DIMENSION[name] in labels]
    if attributes is None:
        return present
    requested = validate_attributes(attributes)
    absent = [name for name in requested if name not in present]
    if absent:
        raise InvarianceConfigError(f"No curves for attribute(s) {absent} in this design; present: {present}.")
    return requested


def _identity_rows(
    identity: str,
    embeddings: torch.Tensor,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    metric: str,
    energy: EnergySettings,
    streams: ScriptStreams | None = None,
) -> list[dict[str, Any]]:
    """Rows of one identity: embeddings ``(N, D)`` float32, curves attribute → ``(idx0, idx1, idx2)``.

    Exact mode draws d̄'s pairs and the cap subsets from ``streams`` (the script's streams, continued
    across identities by the caller; a fresh ``ScriptStreams.seeded(energy.seed)`` when None) and measures
    the attributes in the order of ``curves`` (the script's order when built by :func:`_measure`).
    """
    if energy.exact_repro:
        streams = streams if streams is not None else ScriptStreams.seeded(energy.seed)
        scale = float(script_scale(embeddings.cpu().numpy(), streams.numpy, energy.n_pairs))
    else:
        scale = mean_pair_distance(embeddings, metric=metric, n_pairs=energy.n_pairs, seed=energy.seed)
    if not scale > 0:
        raise InvarianceConfigError(
            f"All embeddings of identity {identity} coincide (d̄ = {scale}): the energy is undefined. "
            "Is the model collapsed, or are its weights missing?"
        )
    rows = []
    for attribute, (idx0, idx1, idx2) in curves.items():
        start, end = embeddings[torch.from_numpy(idx0)], embeddings[torch.from_numpy(idx2)]
        positions = embeddings[torch.from_numpy(idx1)]
        vectors = end - start
        options = {"scale": scale, "neighbourhood": energy.neighbourhood, "params": energy.energy_params(),
                   "metric": metric, "seed": energy.seed, "max_neighbours": energy.max_neighbours}
        if energy.exact_repro:
            results = alignment_energy(positions, vectors, exact_repro=True, random_state=streams.numpy, **options)
        else:
            results = alignment_energy(positions, vectors, **options)
        moving = ~zero_rows(vectors).to(positions.device)  # the field's own points
        with_null = energy.null_baseline and bool(moving.any())
        nulls = null_energy(positions[moving], **options) if with_null else [None] * len(results)
        magnitude = float(displacement_magnitude(start, end, scale, metric).mean())
        for result, null in zip(results, nulls):
            row = {
                "identity": identity, "attribute": attribute, "neighbourhood": result.neighbourhood,
                "param": np.nan if result.param is None else float(result.param),
                "energy": result.energy, "magnitude": magnitude, "n_points": result.n_points,
                "mean_degree": result.mean_degree, "n_isolated": result.n_isolated, "n_zero": result.n_zero,
            }
            if null is not None:
                row["null_energy"] = null.energy
            rows.append(row)
    return rows


def _script_curves(
    table: pd.DataFrame, streams: ScriptStreams, max_curves: int | None
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Exact mode: attribute → curve indices of the curves the script measures, in the script's order."""
    labels = table["moving_dimension"].astype(str)
    curve_ids = {label: table.loc[labels == label, "id_curve"].to_numpy() for label in labels.unique()}
    selected = script_curve_selection(curve_ids, streams, max_curves)
    attribute_of_label = {label: name for name, label in MOVING_DIMENSION.items()}
    curves = {}
    for label in SCRIPT_DIMENSIONS:
        if label in selected:
            rows = table[(labels == label) & table["id_curve"].isin(selected[label])]
            curves[attribute_of_label[label]] = curve_indices(rows, label)
    return curves


def _measure(
    names: Sequence[str],
    load: Callable[[str], np.ndarray | torch.Tensor],
    table: pd.DataFrame,
    *,
    metric: str,
    energy: EnergySettings,
    attributes: Sequence[str] | None,
    run: str,
    epoch: int | None,
    progress: bool,
) -> pd.DataFrame:
    """Rows of every identity in ``names`` (exact mode: one stream for all, identities in sorted file-name
    order, or in the given order with ``identity_order="listing"``)."""
    requested = table_attributes(table, attributes)
    streams = None
    if energy.exact_repro:
        if metric != "cosine":
            raise InvarianceConfigError(
                f"energy.exact_repro reproduces the authors' script, which measures cosine distances only; "
                f"these embeddings declare metric={metric}."
            )
        streams = ScriptStreams.seeded(energy.seed)
        curves = _script_curves(table, streams, energy.max_curves)  # every attribute: the stream needs them all
        if energy.identity_order == "sorted":
            names = sorted(names, key=lambda name: f"{name}.npy")
    else:
        curves = {name: curve_indices(table, MOVING_DIMENSION[name]) for name in requested}
    rows = []
    for identity in tqdm(names, desc="energies", disable=not progress, leave=False):
        embeddings = torch.as_tensor(load(identity), dtype=torch.float32)
        rows.extend(_identity_rows(identity, embeddings, curves, metric=metric, energy=energy, streams=streams))
    rows = [row for row in rows if row["attribute"] in requested]
    columns = list(INVARIANCE_COLUMNS) + (["null_energy"] if energy.null_baseline else [])
    frame = pd.DataFrame(rows, columns=[c for c in columns if c not in ("run", "epoch")])
    frame.insert(0, "run", run)
    frame.insert(1, "epoch", pd.array([epoch] * len(frame), dtype="Int64"))
    return frame


def invariance_rows(
    embeddings: Mapping[str, np.ndarray | torch.Tensor],
    table: pd.DataFrame,
    *,
    metric: str,
    energy: EnergySettings = EnergySettings(),
    attributes: Sequence[str] | None = None,
    run: str = "",
    epoch: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Tidy energy rows from in-memory embeddings.

    Args:
        embeddings: identity name → (N, D) embeddings of that identity's images (row = the table's
            ``index`` column).
        table: the curve table (columns ``id_curve, moving_dimension, param_step, index``).
        metric: position metric d_X, ``"cosine"`` or ``"euclidean"``.
        energy: the settings; with ``exact_repro`` the identities are measured in sorted file-name order
            (``<name>.npy``) on one pair of script streams, as the released script does.
        attributes: attributes to measure (default: every attribute with curves in ``table``).
        run, epoch: copied into every row.

    Returns:
        One row per identity × attribute × param, columns :data:`INVARIANCE_COLUMNS`.
    """
    return _measure(list(embeddings), embeddings.__getitem__, table, metric=metric, energy=energy,
                    attributes=attributes, run=run, epoch=epoch, progress=progress)


def measure_invariance_from_embeddings(
    source: PaperEmbeddings,
    *,
    metric: str = "cosine",
    energy: EnergySettings = EnergySettings(),
    attributes: Sequence[str] | None = None,
    run: str = "",
    epoch: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Tidy energy rows from embeddings in the paper layout, loading one identity at a time.

    With ``energy.exact_repro`` this equals the released ``energy_finetuning_ball.py`` run on that folder
    (as the only model folder of its run) after ``random.seed(energy.seed); np.random.seed(energy.seed)``,
    identities in sorted file-name order, or in the folder's ``os.listdir`` order with
    ``energy.identity_order="listing"``.
    """
    names = source.listed if energy.identity_order == "listing" else source.identities
    return _measure(names, source.load, source.table, metric=metric, energy=energy,
                    attributes=attributes, run=run, epoch=epoch, progress=progress)
