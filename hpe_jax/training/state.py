"""The train state: a flax struct carried through the pmapped steps.

It holds the student's params and BatchNorm statistics, the optimizer state, the step, and the
EMA teacher's params and statistics (None until fine-tuning creates them; always None with
the paper's online teacher, whose pseudo-labels come from the student itself).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any

#: Fine-tuning teacher modes (config.finetune.teacher): "ema" (this project: an EMA copy of the
#: student, created at the switch) and "online" (the paper: the current student, no copy).
TEACHER_MODES: tuple[str, ...] = ("ema", "online")


def check_teacher(name: str) -> str:
    """Returns `name` if it is a teacher mode, else raises ValueError naming the valid ones.

    Called at start-up, before anything compiles: a typo such as "EMA" must not silently select
    another mode.
    """
    if name not in TEACHER_MODES:
        raise ValueError(f"unknown config.finetune.teacher {name!r}; use one of "
                         f"{', '.join(repr(m) for m in TEACHER_MODES)}")
    return name


@struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: PyTree
    batch_stats: PyTree
    opt_state: optax.OptState
    teacher_params: PyTree = None
    teacher_batch_stats: PyTree = None
    tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)

    @classmethod
    def create(cls, variables: dict, tx: optax.GradientTransformation) -> TrainState:
        """Step 0: `variables` {'params', 'batch_stats'} and `tx`'s initial state, no teacher."""
        params = variables["params"]
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            tx=tx,
        )

    def apply_gradients(self, grads: PyTree, batch_stats: PyTree) -> tuple[TrainState, PyTree]:
        """One optimizer update; returns the new state and the updates (for their norm)."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        new = self.replace(step=self.step + 1, params=params, opt_state=opt_state,
                           batch_stats=batch_stats)
        return new, updates

    @property
    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats}

    @property
    def teacher_variables(self) -> dict:
        """The teacher's variables; the student's own until a teacher exists."""
        if self.teacher_params is None:
            return self.variables
        return {"params": self.teacher_params, "batch_stats": self.teacher_batch_stats}

    def with_teacher(self) -> TrainState:
        """A copy whose teacher starts as the current student (at the switch to fine-tuning)."""
        copy = lambda t: jax.tree_util.tree_map(jnp.array, t)  # noqa: E731  (own buffers)
        return self.replace(teacher_params=copy(self.params),
                            teacher_batch_stats=copy(self.batch_stats))


def ema_update(teacher: PyTree, student: PyTree, decay: float | jnp.ndarray) -> PyTree:
    """teacher <- decay * teacher + (1 - decay) * student, leaf by leaf."""
    return jax.tree_util.tree_map(lambda t, s: decay * t + (1.0 - decay) * s, teacher, student)
