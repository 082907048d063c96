"""Checkpoints with orbax: every K steps, keep N, resume from the newest step that restores.

A checkpoint holds the train state (parameters, optimiser state, step, PRNG key data) as arrays and a
small JSON record (data-iterator position, config, anything else the loop needs to continue exactly).
Orbax writes each step to a temporary directory and renames it when complete, so a killed save never
looks finished; a finished step that no longer restores (deleted or truncated files) is skipped with a
warning and the one before it is used.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves (state, record) pairs under `directory/<step>`; restores the newest readable one."""

    def __init__(self, directory: str | Path, every: int, keep: int, async_save: bool = False):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every, create=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "record"))

    def steps(self) -> list[int]:
        """Finished checkpoint steps, oldest first."""
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, record: dict, force: bool = False) -> bool:
        """Save if `step` is on the interval (or `force`); True when a checkpoint was written."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record))
        saved = self.manager.save(step, args=args, force=force)
        self.manager.wait_until_finished()
        return bool(saved)

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, record) of the newest checkpoint that restores, or None if there is none.

        `abstract_state` (e.g. from `jax.eval_shape`, with shardings) fixes the tree structure, dtypes
        and placement, so optax states come back as the right named tuples.
        """
        for step in reversed(self.steps()):
            args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                      record=ocp.args.JsonRestore())
            try:
                out = self.manager.restore(step, args=args)
            except Exception as err:  # noqa: BLE001 - any unreadable step falls back to the previous one
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                # Set the step aside (not deleted: it may be worth inspecting) so that training can
                # write this step again when it gets there.
                aside = self.directory / f"{step}.unreadable"
                (self.directory / str(step)).rename(aside)
                self.manager.reload()
                warnings.warn(f"checkpoint step {step} in {self.directory} could not be restored "
                              f"({type(err).__name__}: {first[:200]}); moved it to {aside.name} and "
                              f"fell back to an earlier step", stacklevel=2)
                continue
            return step, out["state"], dict(out["record"])
        return None

    def close(self) -> None:
        """Finish pending writes and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a concrete tree: the restore target of `tree`'s layout."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
