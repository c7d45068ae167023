"""Curve designs for the microscale alignment energy (DESIGN §4).

A *curve* for attribute ``a`` is three images of one identity: step 1 is the centre controls ``p``,
steps 0 and 2 are ``p - h e_a`` and ``p + h e_a``. A :class:`CurveDesign` holds the controls of every
unique image of one identity and the paper's ``df_param_step`` table (one row per image-in-curve,
columns :data:`TABLE_COLUMNS`); ``index`` is a row of ``controls`` and of the identity's ``(N, D)``
embedding array, so the same design serves every identity and every model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fr_invariance.attributes import (
    ATTRIBUTE_NAMES,
    IMAGE_ATTRIBUTES,
    NUM_ATTRIBUTES,
    SEMANTIC_ATTRIBUTES,
    attribute_index,
    get_attribute,
    validate_attributes,
)
from fr_invariance.errors import ConfigurationError

MOVING_DIMENSION: dict[str, str] = {
    "head_angle": "0",
    "age": "1",
    "hair_color": "2",
    "illumination": "3",
    "expression": "4",
    "brightness": "brightness",
    "contrast": "contrast",
    "hue": "hue",
}
"""Attribute name -> the paper's ``moving_dimension`` label in ``df_param_step.csv``."""

TABLE_COLUMNS = ("id_curve", "moving_dimension", "param_step", "index")

_ATTRIBUTE_OF_LABEL = {label: name for name, label in MOVING_DIMENSION.items()}


class CurveDesignError(ConfigurationError):
    """Raised for a curve table that is inconsistent (missing steps, unknown dimension, ...)."""


def _moving_dimension_label(moving_dimension: str | int) -> str:
    """Accept a paper label (``'0'``..``'4'``, ``0``..``4``, ``'brightness'``...) or an attribute name."""
    label = str(moving_dimension)
    if label in _ATTRIBUTE_OF_LABEL:
        return label
    return MOVING_DIMENSION[get_attribute(label).name]


def curve_indices(table: pd.DataFrame, moving_dimension: str | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image indices of the curves along one moving dimension.

    Args:
        table: a ``df_param_step`` table with columns :data:`TABLE_COLUMNS` (e.g. read from CSV;
            ``moving_dimension`` may be int or str).
        moving_dimension: paper label (``'0'``..``'4'``, ``'brightness'``, ``'contrast'``, ``'hue'``)
            or attribute name (``'head_angle'``...).

    Returns:
        ``(idx_step0, idx_step1, idx_step2)``, each ``(C,)`` int64, curves sorted by ``id_curve``.

    Raises:
        CurveDesignError: missing columns, no curve for that dimension, a curve without exactly one
            row for each of the steps 0, 1, 2.
    """
    missing = [column for column in TABLE_COLUMNS if column not in table.columns]
    if missing:
        raise CurveDesignError(
            f"Curve table lacks column(s) {missing}; expected columns {list(TABLE_COLUMNS)}."
        )
    label = _moving_dimension_label(moving_dimension)
    labels = table["moving_dimension"].astype(str)
    rows = table.loc[labels == label, ["id_curve", "param_step", "index"]]
    if rows.empty:
        present = sorted(labels.unique())
        raise CurveDesignError(
            f"No curve moves along dimension {label!r}; dimensions present: {present}."
        )
    bad_steps = sorted(set(rows["param_step"].unique()) - {0, 1, 2})
    if bad_steps:
        raise CurveDesignError(f"Dimension {label!r} has param_step value(s) {bad_steps}; only 0, 1, 2 are valid.")
    duplicated = rows.duplicated(["id_curve", "param_step"])
    if duplicated.any():
        curve = rows.loc[duplicated, "id_curve"].iloc[0]
        raise CurveDesignError(f"Curve {curve} of dimension {label!r} has a param_step listed twice.")
    steps = rows.pivot(index="id_curve", columns="param_step", values="index").sort_index()
    steps = steps.reindex(columns=[0, 1, 2])
    incomplete = steps.isna().any(axis=1)
    if incomplete.any():
        curve = steps.index[incomplete.to_numpy()][0]
        raise CurveDesignError(
            f"Curve {curve} of dimension {label!r} lacks param_step(s) "
            f"{[s for s in (0, 1, 2) if pd.isna(steps.loc[curve, s])]}; every curve needs steps 0, 1 and 2."
        )
    values = steps.to_numpy(dtype=np.int64)
    return values[:, 0].copy(), values[:, 1].copy(), values[:, 2].copy()


@dataclass(frozen=True, eq=False)
class CurveDesign:
    """The images and curves of one identity.

    Attributes:
        controls: ``(N_images, 8)`` float32 controls of every unique image, columns in
            ``ATTRIBUTE_NAMES`` order.
        table: one row per image-in-curve, columns :data:`TABLE_COLUMNS`: ``id_curve`` (int),
            ``moving_dimension`` (str, see :data:`MOVING_DIMENSION`), ``param_step`` (0, 1, 2),
            ``index`` (row of ``controls``).
    """

    controls: torch.Tensor
    table: pd.DataFrame

    def __post_init__(self) -> None:
        if self.controls.ndim != 2 or self.controls.shape[1] != NUM_ATTRIBUTES:
            raise CurveDesignError(
                f"controls must have shape (N_images, {NUM_ATTRIBUTES}), got {tuple(self.controls.shape)}."
            )
        if tuple(self.table.columns) != TABLE_COLUMNS:
            raise CurveDesignError(f"table columns must be {list(TABLE_COLUMNS)}, got {list(self.table.columns)}.")
        index = self.table["index"].to_numpy()
        if index.size and (index.min() < 0 or index.max() >= self.controls.shape[0]):
            raise CurveDesignError(
                f"table index values must lie in [0, {self.controls.shape[0]}) (rows of controls)."
            )

    def attributes(self) -> list[str]:
        """Names of the attributes that have curves, in registry order."""
        labels = set(self.table["moving_dimension"].astype(str).unique())
        return [name for name in ATTRIBUTE_NAMES if MOVING_DIMENSION[name] in labels]

    def curve_indices(self, attribute: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(idx_step0, idx_step1, idx_step2)`` of the attribute's curves, each ``(C,)``, by ``id_curve``."""
        return curve_indices(self.table, MOVING_DIMENSION[get_attribute(attribute).name])


def _build_table(labels: Sequence[str], steps_per_dimension: Sequence[np.ndarray]) -> pd.DataFrame:
    """Table from per-dimension ``(C_d, 3)`` index arrays; ``id_curve`` runs over all dimensions."""
    counts = [len(steps) for steps in steps_per_dimension]
    n_curves = sum(counts)
    return pd.DataFrame(
        {
            "id_curve": np.repeat(np.arange(n_curves, dtype=np.int64), 3),
            "moving_dimension": np.repeat(np.array(labels, dtype=object), [3 * c for c in counts]),
            "param_step": np.tile(np.arange(3, dtype=np.int64), n_curves),
            "index": np.concatenate([steps.reshape(-1) for steps in steps_per_dimension]).astype(np.int64),
        },
        columns=list(TABLE_COLUMNS),
    )


def _nuisance_half_widths(
    nuisance: float | Mapping[str, float], curve_attributes: Sequence[str], step: float
) -> torch.Tensor:
    """``(8,)`` half-widths of the centre box: a float applies to the curve attributes, a mapping to
    the attributes it names (others stay neutral); clipped so that ``p ± step`` stays in ``[-1, 1]``
    along every curve attribute."""
    if isinstance(nuisance, Mapping):
        requested = dict(zip(validate_attributes(nuisance.keys()), nuisance.values()))
    else:
        requested = {name: nuisance for name in curve_attributes}
    half_widths = torch.zeros(NUM_ATTRIBUTES, dtype=torch.float64)
    for name, width in requested.items():
        width = float(width)
        if not 0.0 <= width <= 1.0:
            raise ValueError(f"Nuisance half-width of {name!r} is {width}; it must lie in [0, 1].")
        limit = 1.0 - step if name in curve_attributes else 1.0
        half_widths[attribute_index(name)] = min(width, limit)
    return half_widths


def sampled_design(
    n_curves: int,
    attributes: Sequence[str] | None = None,
    step: float = 0.25,
    nuisance: float | Mapping[str, float] = 0.5,
    seed: int = 0,
) -> CurveDesign:
    """A cheap random design: ``n_curves`` centres shared by every attribute.

    Centres ``p`` (``C = n_curves``) are drawn with a seeded ``torch.Generator`` uniformly in the
    nuisance box ``|p_a| <= w_a``: ``w_a = nuisance`` for every curve attribute (a mapping gives
    per-attribute half-widths and may also vary attributes without curves; attributes it does not
    name stay at 0), clipped to ``1 - step`` on curve attributes so that ``p ± step`` stays in
    ``[-1, 1]``. Each centre is one image shared by all attributes' curves (step 1); steps 0 and 2
    are ``p ∓ step·e_a``.

    Image order: the C centres, then for each attribute (registry order) its C step-0 images and
    its C step-2 images, so ``N_images = C + 2·C·A``. ``id_curve = k·C + c`` for the k-th attribute
    (registry order) and centre c.

    Args:
        n_curves: C >= 1 curves per attribute.
        attributes: attribute names (default: all 8); any order, reported in registry order.
        step: control step ``h`` in ``(0, 1]``.
        nuisance: half-width(s) in ``[0, 1]`` of the centre box.
        seed: seed of the centre draw.
    """
    if n_curves < 1:
        raise ValueError(f"n_curves={n_curves}: a design needs at least one curve per attribute.")
    if not 0.0 < step <= 1.0:
        raise ValueError(f"step={step} must lie in (0, 1] so that p ± step can stay in [-1, 1].")
    names = list(ATTRIBUTE_NAMES) if attributes is None else validate_attributes(attributes)
    if not names:
        raise ValueError("attributes is empty: give at least one attribute (or None for all).")
    if len(set(names)) != len(names):
        raise ValueError(f"attributes {names} lists an attribute twice.")
    names = [name for name in ATTRIBUTE_NAMES if name in names]

    half_widths = _nuisance_half_widths(nuisance, names, step)
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(n_curves, NUM_ATTRIBUTES, generator=generator, dtype=torch.float64)
    centres = 2.0 * uniform * half_widths - half_widths  # U(-w, w); exactly +0.0 where w = 0

    blocks = [centres]
    steps_per_attribute = []
    centre_index = np.arange(n_curves, dtype=np.int64)
    for k, name in enumerate(names):
        offset = torch.zeros(NUM_ATTRIBUTES, dtype=torch.float64)
        offset[attribute_index(name)] = step
        blocks += [centres - offset, centres + offset]
        first = n_curves * (1 + 2 * k)
        steps_per_attribute.append(np.stack([first + centre_index, centre_index, first + n_curves + centre_index], 1))
    controls = torch.cat(blocks).to(torch.float32)
    table = _build_table([MOVING_DIMENSION[name] for name in names], steps_per_attribute)
    return CurveDesign(controls=controls, table=table)


# The paper's full lattice (DESIGN §4).
_SEMANTIC_VALUES = 7  # semantic lattice values 0..6; the core uses 1..5, padding puts one coordinate at 0 or 6
_SEMANTIC_CENTRE = 3
_IMAGE_CENTRE = 2  # image-level star values 0..4, centre 2
_STAR_OFF_CENTRE = (0, 1, 3, 4)
_STAR_SIZE = 1 + len(IMAGE_ATTRIBUTES) * len(_STAR_OFF_CENTRE)  # 13


def _lattice_nodes() -> np.ndarray:
    """``(9375, 5)`` semantic lattice values: the 3,125 core nodes (values 1..5, lexicographic),
    then the 6,250 padding nodes (exactly one coordinate 0 or 6, the others 1..5; lexicographic)."""
    grid = np.stack(
        np.meshgrid(*[np.arange(_SEMANTIC_VALUES)] * len(SEMANTIC_ATTRIBUTES), indexing="ij"), -1
    ).reshape(-1, len(SEMANTIC_ATTRIBUTES))
    on_edge = (grid == 0) | (grid == _SEMANTIC_VALUES - 1)
    edge_count = on_edge.sum(1)
    return np.concatenate([grid[edge_count == 0], grid[edge_count == 1]])


def _star_variants() -> np.ndarray:
    """``(13, 3)`` image-level star values: centre (2, 2, 2), then for brightness, contrast, hue in
    turn the values 0, 1, 3, 4 along that dimension (the others at 2)."""
    variants = np.full((_STAR_SIZE, len(IMAGE_ATTRIBUTES)), _IMAGE_CENTRE, dtype=np.int64)
    for k in range(len(IMAGE_ATTRIBUTES)):
        rows = slice(1 + k * len(_STAR_OFF_CENTRE), 1 + (k + 1) * len(_STAR_OFF_CENTRE))
        variants[rows, k] = _STAR_OFF_CENTRE
    return variants


def paper_lattice_design() -> CurveDesign:
    """The paper's full per-identity lattice: 9,375 nodes × 13 star variants = 121,875 images.

    Nodes: 5 semantic dimensions (head_angle, age, hair_color, illumination, expression) with
    values 0..6, control ``t = (v - 3) / 3``; the core grid is values 1..5 (5⁵ = 3,125 nodes), plus
    6,250 padding nodes with exactly one coordinate at 0 or 6. Every node carries a star of 13
    image-level variants: the centre (brightness, contrast, hue all at value 2), then each image
    dimension at values 0, 1, 3, 4 of a 0..4 segment, control ``t = (w - 2) / 2``.

    Image order: ``index = 13 · node + variant`` with nodes as in the core-then-padding order (each
    part lexicographic) and variants ordered centre, brightness 0,1,3,4, contrast 0,1,3,4,
    hue 0,1,3,4.

    Curves (an interpretation that yields the paper's 21,125 curves per semantic dimension):
    for semantic dimension d, every line of nodes along d (the other four coordinates fixed) and
    every star variant gives ONE curve, centred at the line's middle value 3 with steps at values
    2, 3, 4. Core lines (other coordinates in 1..5, 5⁴ = 625) run 0..6, padded lines (one other
    coordinate at 0 or 6, 4·2·5³ = 1,000) run 1..5; (625 + 1,000) × 13 = 21,125 curves. A line is
    identified by its middle node, so curves are ordered by middle node, then variant.
    For image dimension k, every node's star line along k (values 0..4) gives one curve centred
    at 2 (the node's centre variant) with steps at values 1 and 3: 9,375 curves, in node order.

    Table rows: grouped by moving dimension (registry order: '0'..'4', brightness, contrast, hue),
    ``id_curve`` increasing over the whole table, ``param_step`` 0, 1, 2.
    """
    nodes = _lattice_nodes()
    variants = _star_variants()
    n_nodes, n_semantic = nodes.shape

    semantic_controls = (nodes - _SEMANTIC_CENTRE) / _SEMANTIC_CENTRE
    image_controls = (variants - _IMAGE_CENTRE) / _IMAGE_CENTRE
    controls = np.zeros((n_nodes, _STAR_SIZE, NUM_ATTRIBUTES), dtype=np.float64)
    semantic_columns = [attribute_index(name) for name in SEMANTIC_ATTRIBUTES]
    image_columns = [attribute_index(name) for name in IMAGE_ATTRIBUTES]
    controls[:, :, semantic_columns] = semantic_controls[:, None, :]
    controls[:, :, image_columns] = image_controls[None, :, :]

    place_values = _SEMANTIC_VALUES ** np.arange(n_semantic)
    node_of_key = np.full(_SEMANTIC_VALUES**n_semantic, -1, dtype=np.int64)
    node_of_key[nodes @ place_values] = np.arange(n_nodes)
    variant = np.arange(_STAR_SIZE)

    steps_per_dimension = []
    for d in range(n_semantic):
        middle = np.flatnonzero(nodes[:, d] == _SEMANTIC_CENTRE)
        keys = nodes[middle] @ place_values
        node_steps = np.stack([node_of_key[keys - place_values[d]], middle, node_of_key[keys + place_values[d]]], 1)
        image_steps = node_steps[:, None, :] * _STAR_SIZE + variant[None, :, None]
        steps_per_dimension.append(image_steps.reshape(-1, 3))
    node_first_image = np.arange(n_nodes)[:, None] * _STAR_SIZE
    for k in range(len(IMAGE_ATTRIBUTES)):
        value_1, value_3 = (1 + k * len(_STAR_OFF_CENTRE) + _STAR_OFF_CENTRE.index(w) for w in (1, 3))
        steps_per_dimension.append(node_first_image + np.array([value_1, 0, value_3]))

    labels = [MOVING_DIMENSION[name] for name in SEMANTIC_ATTRIBUTES + IMAGE_ATTRIBUTES]
    table = _build_table(labels, steps_per_dimension)
    return CurveDesign(controls=torch.from_numpy(controls.reshape(-1, NUM_ATTRIBUTES)).to(torch.float32), table=table)
