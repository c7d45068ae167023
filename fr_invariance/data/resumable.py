"""A training loader that Lightning can checkpoint mid-epoch (DESIGN §9: resume is continuation).

Lightning saves the ``state_dict`` of a loader that has one and restores it before the resumed run draws
its first batch. The state is the trainer's own progress — the epoch and the batches already trained in it —
so it is right whatever the loader prefetched; on restore the sampler's next pass over that epoch starts
after those batches, and the resumed run trains on exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader


class ResumableLoader(DataLoader):
    """A ``DataLoader`` whose sampler has ``skip_next(epoch, batches)``; ``progress()`` returns the trainer's
    ``(epoch, batches trained in that epoch)``."""

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.progress()
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.skip_next(int(state["epoch"]), int(state["batches"]))
