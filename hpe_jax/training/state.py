"""The train state: a flax struct carried through the pmapped steps.

It holds the student's params and BatchNorm statistics, the optimizer state, the step, and the
teacher's params and statistics, from step 0 (as scenic's LOCA makes its EMA copy at init), so the
state's tree, and every checkpoint's, is the same at every step. The teacher is the model to
deploy: a copy of the student at init, kept equal to the student through pre-training (and by
the paper's online teacher, whose pseudo-labels come from the student itself), reset to the
student at the switch and then, with the EMA teacher, the student's exponential moving average.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any

#: Fine-tuning teacher modes (config.finetune.teacher): "ema" (this project: an EMA copy of the
#: student, reset to the student at the switch) and "online" (the paper: the current student;
#: the state's teacher then follows the student and is not read).
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
    teacher_params: PyTree
    teacher_batch_stats: PyTree
    tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)

    @classmethod
    def create(cls, variables: dict, tx: optax.GradientTransformation) -> TrainState:
        """Step 0: `variables` {'params', 'batch_stats'}, `tx`'s initial state and a teacher
        that is a copy of the student."""
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            teacher_params=_copy(params),
            teacher_batch_stats=_copy(batch_stats),
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
        return {"params": self.teacher_params, "batch_stats": self.teacher_batch_stats}

    def with_teacher(self) -> TrainState:
        """A copy whose teacher is reset to the current student (at the switch to fine-tuning)."""
        return self.replace(teacher_params=_copy(self.params),
                            teacher_batch_stats=_copy(self.batch_stats))

    def teacher_follows(self) -> TrainState:
        """The teacher set to the student (in a traced step: pre-training, online teacher)."""
        return self.replace(teacher_params=self.params, teacher_batch_stats=self.batch_stats)


def _copy(tree: PyTree) -> PyTree:
    """`tree` with its own buffers (a donated student must not take the teacher with it)."""
    return jax.tree_util.tree_map(jnp.array, tree)


def ema_update(teacher: PyTree, student: PyTree, decay: float | jnp.ndarray) -> PyTree:
    """teacher <- decay * teacher + (1 - decay) * student, leaf by leaf."""
    return jax.tree_util.tree_map(lambda t, s: decay * t + (1.0 - decay) * s, teacher, student)
