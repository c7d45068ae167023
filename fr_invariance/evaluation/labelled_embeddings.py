"""Attribute-labelled embeddings for the macroscale, clustering and cross-model analyses.

Where they come from, per source of an :class:`~fr_invariance.evaluation.analyses.base.AnalysisContext`:

- a folder of precomputed embeddings → :func:`~fr_invariance.data.embeddings_table.read_embeddings_table`
  (``embeddings.npy`` + ``meta.csv``), metric from ``context.metric``;
- a model → the labelled data of :class:`LabelledData` (the synthetic set by default, or CelebA), rendered /
  decoded at the model's image size and embedded in batches (eval mode, ``inference_mode``, progress bar),
  metric from the backbone's ``metric`` attribute.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fr_invariance.data.embeddings_table import EmbeddingsTable, read_embeddings_table
from fr_invariance.errors import ConfigurationError
from fr_invariance.evaluation.embed import evaluation_mode, model_device
from fr_invariance.models.preprocess import to_model_input

if TYPE_CHECKING:
    from fr_invariance.evaluation.analyses.base import AnalysisContext
    from fr_invariance.evaluation.checkpoints import ModelSource

SOURCES = ("synthetic", "celeba")


class LabelledDataError(ConfigurationError):
    """Settings of the labelled data that cannot work (unknown source, CelebA without a root...)."""


@dataclass
class LabelledData:
    """Which labelled images a model is embedded on (the ``data`` node of the analysis YAML).

    Attributes:
        source: ``synthetic`` (default; :mod:`fr_invariance.data.datasets.labelled_synthetic`) or ``celeba``.
        n_identities, images_per_identity, identity_seed, seed, concentration, control_range: the
            synthetic set (see :func:`~fr_invariance.data.datasets.labelled_synthetic.build_labelled_synthetic`).
        celeba_root, celeba_image_dir, min_images, crop: the CelebA set
            (:class:`~fr_invariance.data.datasets.celeba.CelebAFaces`).
        num_workers: DataLoader workers decoding CelebA images.
    """

    source: str = "synthetic"
    n_identities: int = 200
    images_per_identity: int = 12
    identity_seed: int = 20000
    seed: int = 0
    concentration: dict[str, float] | None = None
    control_range: tuple[float, float] = (0.2, 0.8)
    celeba_root: str | None = None
    celeba_image_dir: str = "img_align_celeba"
    min_images: int = 30
    crop: str = "center"
    num_workers: int = 0

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | LabelledData | None) -> LabelledData:
        """From a (Hydra) mapping; unknown keys are an error naming the valid ones."""
        if isinstance(node, LabelledData):
            return node
        if node is None:
            return cls()
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(node, DictConfig):
                node = OmegaConf.to_container(node, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf ships with hydra
            pass
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(node) - valid)
        if unknown:
            raise LabelledDataError(f"Unknown data setting(s) {unknown}; valid: {', '.join(sorted(valid))}.")
        settings = cls(**dict(node))
        if settings.source not in SOURCES:
            raise LabelledDataError(f"data.source={settings.source!r}; choose one of {', '.join(SOURCES)}.")
        if settings.source == "celeba" and not settings.celeba_root:
            raise LabelledDataError("data.source=celeba needs data.celeba_root=PATH (folder with list_attr_celeba.txt).")
        settings.control_range = tuple(settings.control_range)  # type: ignore[assignment]
        return settings

    def describe(self) -> str:
        """One line for reports."""
        if self.source == "celeba":
            return (f"CelebA set at {self.celeba_root} (identities with >= {self.min_images} images, {self.crop} crop)")
        return (f"labelled synthetic set: {self.n_identities} identities (sample_identities seed {self.identity_seed}) "
                f"× {self.images_per_identity} images, labels seed {self.seed}, |t| in {list(self.control_range)}")


@dataclass
class NamedEmbeddings:
    """One source's labelled embeddings: display name, position metric and the table."""

    name: str
    metric: str
    table: EmbeddingsTable
    origin: str = ""
    from_model: bool = False


def _embed_batches(model: nn.Module, batches: Iterable[torch.Tensor], total: int, *, progress: bool,
                   description: str) -> np.ndarray:
    """Embed float image batches in [0, 1] → ``(N, E)`` float32."""
    device = model_device(model)
    chunks = []
    with evaluation_mode(model):
        for images in tqdm(batches, total=total, desc=description, disable=not progress, leave=False):
            chunks.append(model(to_model_input(images.to(device, non_blocking=True))).float().cpu())
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)


def embed_synthetic(model: nn.Module, settings: LabelledData, *, image_size: int, batch_size: int = 256,
                    progress: bool = False, description: str = "render+embed") -> EmbeddingsTable:
    """Render the labelled synthetic set at ``image_size`` on the model's device and embed it."""
    from fr_invariance.data.datasets.labelled_synthetic import build_labelled_synthetic

    labelled = build_labelled_synthetic(settings.n_identities, settings.images_per_identity,
                                        identity_seed=settings.identity_seed, seed=settings.seed,
                                        concentration=settings.concentration, control_range=settings.control_range)
    batches = labelled.iter_images(image_size=image_size, batch_size=batch_size, device=model_device(model))
    embeddings = _embed_batches(model, batches, -(-len(labelled) // batch_size), progress=progress,
                                description=description)
    return EmbeddingsTable(embeddings, labelled.identity_labels, labelled.attributes, kinds=dict(labelled.kinds))


def _collate_with_indices(items: list[tuple[torch.Tensor | None, int, int, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    good = [item for item in items if item[0] is not None]
    images = torch.stack([item[0] for item in good]) if good else torch.empty(0, 3, 1, 1, dtype=torch.uint8)
    return images, torch.tensor([item[2] for item in good], dtype=torch.int64)


def embed_celeba(model: nn.Module, settings: LabelledData, *, image_size: int, batch_size: int = 256,
                 progress: bool = False, description: str = "embed CelebA") -> EmbeddingsTable:
    """Decode the CelebA images at ``image_size`` and embed them. Images that cannot be read (missing or
    undecodable) are left out with a warning that counts them, and identities left with fewer than
    ``settings.min_images`` readable images are dropped too, so the ≥ ``min_images`` rule holds for what is
    analysed."""
    from fr_invariance.data.datasets.celeba import CelebAFaces

    dataset = CelebAFaces(settings.celeba_root, image_size, min_images=settings.min_images,
                          image_dir=settings.celeba_image_dir, crop=settings.crop)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=settings.num_workers,
                        collate_fn=_collate_with_indices)
    device = model_device(model)
    chunks, kept = [], []
    with evaluation_mode(model):
        for images, indices in tqdm(loader, desc=description, disable=not progress, leave=False):
            if images.shape[0] == 0:
                continue
            batch = images.to(device, non_blocking=True).float().div_(255.0)
            chunks.append(model(to_model_input(batch)).float().cpu())
            kept.append(indices)
    names = dataset.table["image"].to_numpy()
    rows = torch.cat(kept).numpy() if kept else np.zeros(0, np.int64)
    unread = np.setdiff1d(np.arange(len(dataset)), rows)
    if not chunks:
        raise LabelledDataError(
            f"None of the {len(dataset)} CelebA images listed could be read under {dataset.image_dir} (missing or "
            f"undecodable, e.g. {names[unread[0]]}); check celeba_image_dir and the files' extension.")
    embeddings = torch.cat(chunks).numpy()
    if unread.size:
        identities = dataset.identities[rows]
        labels, counts = np.unique(identities, return_counts=True)
        short = labels[counts < settings.min_images]
        enough = ~np.isin(identities, short)
        rows, embeddings = rows[enough], embeddings[enough]
        warnings.warn(f"{unread.size} of {len(dataset)} CelebA images could not be read under {dataset.image_dir} "
                      f"(missing or undecodable, e.g. {names[unread[0]]}); they are left out, and with them "
                      f"{short.size} identities left with fewer than {settings.min_images} images.", stacklevel=2)
        if rows.size == 0:
            raise LabelledDataError(f"No CelebA identity keeps {settings.min_images} readable images under "
                                    f"{dataset.image_dir}; lower min_images or restore the missing files.")
    kinds = {name: "annotated" for name in dataset.attributes.columns}
    table = EmbeddingsTable(embeddings, dataset.identities[rows], dataset.attributes.iloc[rows].reset_index(drop=True),
                            names=names[rows], kinds=kinds)
    return table


def collect_labelled_embeddings(context: AnalysisContext, settings: LabelledData) -> list[NamedEmbeddings]:
    """Every source of ``context`` as labelled embeddings, in the context's order (a shipped pretrained
    model when no path was given).

    Raises:
        LabelledDataError: nothing to analyse; the readers' errors for a bad embeddings folder or data root.
    """
    folders = dict(context.embedding_sources())
    out: list[NamedEmbeddings] = []
    models = iter(context.models())
    names = list(context.names) if context.sources else []
    if not names:  # a shipped pretrained model (model=<name>) without a path
        for source in models:
            out.append(_embed_model(source, settings, context))
        if not out:
            raise LabelledDataError("Nothing to analyse: pass checkpoint=, checkpoints=[...] or embeddings_dir=.")
        return out
    for name in names:
        if name in folders:
            table = read_embeddings_table(folders[name])
            out.append(NamedEmbeddings(name, str(context.metric), table, origin=str(folders[name])))
        else:
            out.append(_embed_model(next(models), settings, context))
    return out


def _embed_model(source: ModelSource, settings: LabelledData, context: AnalysisContext) -> NamedEmbeddings:
    """Embed the labelled data with one loaded model (its metric from the backbone's ``metric``)."""
    backbone = source.backbone
    metric = str(getattr(backbone, "metric", "cosine"))
    embed = embed_celeba if settings.source == "celeba" else embed_synthetic
    table = embed(backbone, settings, image_size=int(source.image_size), batch_size=int(context.batch_size),
                  progress=bool(context.progress), description=f"{source.name}: embed labelled set")
    return NamedEmbeddings(source.name, metric, table, origin=str(getattr(source, "path", "")), from_model=True)


def select_attributes(table: EmbeddingsTable, attributes: Iterable[str] | None) -> list[str]:
    """The attributes to analyse: all of the table's, or the requested ones (unknown names are an error)."""
    available = table.attribute_names
    if attributes is None:
        return available
    requested = list(attributes)
    unknown = [a for a in requested if a not in available]
    if unknown:
        raise LabelledDataError(f"attribute(s) {unknown} not in the data; available: {', '.join(available)}.")
    return requested


def attribute_kind(table: EmbeddingsTable, attribute: str) -> str:
    """The kind of ``attribute`` for reports (``annotated`` when the table does not say)."""
    return table.kinds.get(attribute, "annotated")


def labels_of(table: EmbeddingsTable, attribute: str) -> np.ndarray:
    """``(N,)`` int8 labels of ``attribute``."""
    return table.attributes[attribute].to_numpy(dtype=np.int8)


def frame_of(rows: list[dict[str, Any]], columns: Iterable[str]) -> pd.DataFrame:
    """A tidy frame with the given column order (an empty frame keeps the columns)."""
    return pd.DataFrame(rows, columns=list(columns))


def data_line(settings: LabelledData, sources: list[NamedEmbeddings]) -> str:
    """Where the labelled images came from, for a report's settings list."""
    parts = []
    if any(source.from_model for source in sources):
        parts.append(f"models embedded on the {settings.describe()}")
    folders = [f"{s.name} = {s.origin}" for s in sources if not s.from_model]
    if folders:
        parts.append("precomputed embeddings (embeddings.npy + meta.csv): " + ", ".join(folders))
    return "; ".join(parts) or "–"
