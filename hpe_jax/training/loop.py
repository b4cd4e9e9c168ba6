"""The training loop: one run that pre-trains, then fine-tunes, resumable and preemption-safe.

Start-up order:
  1. resume from the latest checkpoint in `workdir/checkpoints` (same step, same data position);
  2. else initialise the encoders from converted torchvision weights (`config.model.init_from`);
  3. else from scratch.
Steps [0, pretrain_steps) pre-train on the labelled source; steps [pretrain_steps, total) fine-tune
with a labelled source batch and an unlabelled target batch per step. At the switch a checkpoint is
written and the teacher (in the state from step 0) is reset to a copy of the student.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from flax import jax_utils

from hpe_jax.data import pipeline
from hpe_jax.objectives.pseudo_labels import normalized_template
from hpe_jax.runtime import trace_cache
from hpe_jax.training import checkpoint, config_checks, optim, steps, switch
from hpe_jax.training.factory import build_model, initial_state
from hpe_jax.training.phases import phase_augment, phase_loss
from hpe_jax.training.state import TrainState, check_teacher


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss term became NaN or Inf."""


class Preempted(Exception):  # noqa: N818  (a stop, not an error)
    """SIGTERM arrived: a checkpoint was saved at `step`; re-running the same command resumes."""

    def __init__(self, step: int):
        super().__init__(f"preempted at step {step}; checkpoint saved, re-run to resume")
        self.step = step


def stop_quietly_when_preempted(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """Wraps a tool's absl `main`: after a SIGTERM save it logs and returns (exit status 0)."""

    def wrapped(argv: list[str]) -> None:
        try:
            main(argv)
        except Preempted as stop:
            logging.warning("%s", stop)

    return wrapped


@dataclasses.dataclass(frozen=True)
class Plan:
    """Step counts of the run, derived from the config and the split sizes."""

    pretrain_steps: int
    finetune_steps: int
    pretrain_steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + self.finetune_steps


def make_plan(config: ml_collections.ConfigDict) -> Plan:
    data = config.data
    data_dir = data.data_dir or None
    n_src = pipeline.num_examples(data.source, data.source_split, data_dir)
    per_epoch = optim.steps_per_epoch(n_src, config.pretrain.batch_size)
    ft_steps = 0
    if config.finetune.epochs > 0:
        n_tgt = pipeline.num_examples(data.target, data.target_split, data_dir)
        ft_steps = config.finetune.epochs * optim.steps_per_epoch(
            n_tgt, config.finetune.unlabelled_batch_size)
    return Plan(config.pretrain.epochs * per_epoch, ft_steps, per_epoch)


def make_optimizer(config: ml_collections.ConfigDict, plan: Plan):
    """(tx, schedule): Adam on the joined pre-training / fine-tuning schedule of `config`."""
    return _optimizer(
        float(config.pretrain.lr),
        tuple(e * plan.pretrain_steps_per_epoch for e in config.pretrain.decay_epochs),
        float(config.pretrain.decay_factor), int(config.pretrain.warmup_steps),
        str(config.pretrain.decay), plan.pretrain_steps,
        float(config.pretrain.final_lr_factor),
        plan.pretrain_steps if plan.finetune_steps else None, float(config.finetune.lr),
        float(config.optim.b1), float(config.optim.b2), float(config.optim.clip_norm))


# One optimizer object per set of hyper-parameters: TrainState carries `tx` as static pytree
# data, which a compiled step's cache compares by equality, and two optax chains built alike
# are not equal; a repeated or resumed run in the same process would otherwise recompile.
@functools.lru_cache(maxsize=16)
def _optimizer(lr: float, boundaries: tuple[int, ...], factor: float, warmup_steps: int,
               decay: str, total_steps: int, final_factor: float, switch_step: int | None,
               finetune_lr: float, b1: float, b2: float, clip_norm: float):
    pre = optim.pretrain_schedule(lr, list(boundaries), factor, warmup_steps, decay, total_steps,
                                  final_factor)
    schedule = optim.joined_schedule(pre, switch_step, finetune_lr)
    return optim.make_optimizer(schedule, b1, b2, clip_norm), schedule


def _check_finite(metrics: dict, step: int) -> None:
    bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
    if bad:
        loss_terms = [k for k in bad if not k.startswith("norm/")] or bad
        raise NonFiniteLossError(
            f"non-finite value at step {step} in {', '.join(sorted(loss_terms))}; training "
            "stopped without saving this state (the last checkpoint is the last good one). "
            "Lower the learning rate or enable config.optim.clip_norm."
        )


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class _Progress:
    """The console's progress: one line per log interval, "compiling ..." before each phase's
    first step, and a warning when fine-tuning keeps no pseudo-label for several intervals.

    The rate (and so the ETA) is measured from the end of each phase's first step: compilation
    is excluded, and the ETA restarts at the phase switch, whose steps cost differently (two
    batches and a teacher pass in fine-tuning). From the second interval of a phase on, the rate
    is the last interval's, so that a change of speed (another job on the machine) shows within
    one interval. (The first interval once ran at half speed because the step compiled a second
    time on its second call; `steps.replicate` removed that, and in `make demo` the first
    fine-tuning line's ETA now reads 2m42s for 162 s left.) The ETA is the current phase's
    remaining time plus, in pre-training, nothing for fine-tuning (not yet measured; the line
    says so).
    """

    ZERO_KEPT_INTERVALS = 3
    TERMS = ("loss", "L_s", "L_c", "L_l", "L_d")

    def __init__(self, plan: Plan):
        self.plan = plan
        self.phase: str | None = None
        self.t0 = 0.0
        self.step0 = 0
        self.last: tuple[int, float] | None = None  # (step, time) of the phase's last log line
        self.zero_kept = 0

    def before_first_step(self, phase: str, step: int) -> None:
        self.phase, self.t0, self.step0, self.last = phase, 0.0, step, None
        logging.info("%s: compiling the step function (the first step takes a while) ...",
                     phase)

    def after_first_step(self, step: int, done: Callable[[], object]) -> None:
        """Called once per phase after its first step; `done` blocks until it finished."""
        done()
        self.t0, self.step0 = time.time(), step

    def log(self, step: int, summary: dict[str, float]) -> None:
        end = self.plan.pretrain_steps if self.phase == "pretrain" else self.plan.total_steps
        terms = " ".join(f"{k} {summary[k]:.4g}" for k in self.TERMS if k in summary)
        parts = [f"{self.phase} {step}/{self.plan.total_steps}", terms]
        if "pseudo/kept" in summary:
            parts.append(f"kept {100 * summary['pseudo/kept']:.0f}%")
        now = time.time()
        since_step, since = self.last if self.last is not None else (self.step0, self.t0)
        if self.t0:
            self.last = (step, now)
        if self.t0 and step > since_step and now > since:
            rate = (step - since_step) / (now - since)
            eta = _duration((end - step) / rate)
            rest = " + fine-tuning" if self.phase == "pretrain" and self.plan.finetune_steps \
                else ""
            parts.append(f"{rate:.2f} steps/s ETA {eta}{rest}")
        logging.info("%s", "  ".join(p for p in parts if p))
        if self.phase == "finetune" and "pseudo/kept" in summary:
            self.zero_kept = self.zero_kept + 1 if summary["pseudo/kept"] == 0.0 else 0
            if self.zero_kept == self.ZERO_KEPT_INTERVALS:
                logging.warning(
                    "no pseudo-label kept for %d log intervals (step %d): L_l trains on "
                    "nothing; raise config.loss.epsilon (see the pseudo/confidence scalar) or "
                    "pre-train longer", self.zero_kept, step)


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each step (save, then exit cleanly)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, training still works
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint and stopping.")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def save_start(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Saves the initial state (e.g. `model.init_variables`, a pre-trained network file) as
    checkpoint 0 in workdir: with `pretrain.epochs` 0 it is the baseline that is evaluated, and
    `train` resumes from it straight into fine-tuning."""
    tx, _ = make_optimizer(config, make_plan(config))
    state = initial_state(config, build_model(config.model, "batch"), tx)
    manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
    checkpoint.save(manager, state, wait=True)
    manager.wait_until_finished()


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Runs (or resumes) the whole training of `config` in `workdir`; returns the final state.

    Writes checkpoints, metrics and the run's files into `workdir`; evaluating a checkpoint is
    separate (`evaluation.run.evaluate_checkpoint`, tools/evaluate.py).
    """
    run = _Run(config, workdir)
    plan, rstate, step = run.plan, run.rstate, run.start
    p_pretrain = _traced_once(steps.bind_pretrain(run.model, config), config, plan, "pretrain")
    # rho's bone lengths; a pre-training-only run needs none (and reads no dataset for them).
    template = switch.rho_template(config, workdir) if plan.finetune_steps \
        else normalized_template()
    p_finetune = _traced_once(steps.bind_finetune(run.model, config, template), config, plan,
                              "finetune", template=template)
    base_rng = jax.random.PRNGKey(config.seed + 17)
    phase, batches, first_of_phase = None, None, False
    with metric_writers.ensure_flushes(run.writer), _Preemption() as preemption:
        while step < plan.total_steps:
            want = "pretrain" if step < plan.pretrain_steps else "finetune"
            if want != phase:
                if want == "finetune":
                    rstate = switch.enter_finetuning(config, run.model, rstate, run.manager,
                                                     plan.pretrain_steps, step)
                    epsilon = switch.finetune_epsilon(config, run.model, rstate, workdir)
                    if epsilon is not None:
                        p_finetune = _traced_once(
                            steps.bind_finetune(run.model, config, template, epsilon=epsilon),
                            config, plan, "finetune", template=template, epsilon=epsilon)
                phase_start = step if want == "pretrain" else step - plan.pretrain_steps
                phase, batches = want, switch.iterators(config, want, phase_start)
                run.progress.before_first_step(phase, step)
                first_of_phase = True
            rngs = jax.random.split(jax.random.fold_in(base_rng, step), jax.local_device_count())
            fn = p_pretrain if phase == "pretrain" else p_finetune
            t0 = time.time()
            new_state, metrics = fn(rstate, next(batches), rngs)
            step += 1
            if first_of_phase:
                run.progress.after_first_step(step, lambda s=new_state: jax.block_until_ready(
                    s.step))
                first_of_phase = False
            stop = run.after_step(step, t0, metrics, phase, preemption.requested)
            rstate = new_state
            if stop or run.save_due(step):
                checkpoint.save(run.manager, jax_utils.unreplicate(rstate), wait=True)
            if preemption.requested:
                logging.warning("Stopped at step %d after SIGTERM; checkpoint saved.", step)
                run.manager.wait_until_finished()
                raise Preempted(step)  # callers (demo, ablation) must not go on
            if stop:
                logging.info("Stopped at step %d (config.stop_after_steps).", step)
                break
    run.manager.wait_until_finished()
    return jax_utils.unreplicate(rstate)


class _Run:
    """What `train` keeps across steps besides the state: the checked config and its plan, the
    model, the checkpoint manager, the metric writer and the console's progress; start-up
    (resume or initialise) and each step's bookkeeping (log intervals, saves, stops)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        check_teacher(config.finetune.teacher)  # before compiling
        steps.check_options(config)
        phase_augment(config, "pretrain")  # refuses a bad data.source_occlusion_phases now
        phase_loss(config, "pretrain")  # and a bad loss.label_huber_phases
        config_checks.resolve(config)      # derived output_size / uv_scale, or a clear refusal
        config_checks.check_init(config)   # the paper configs' "imagenet" placeholder
        config_checks.check_schedule(config)
        self.plan = plan = make_plan(config)
        tx, self.schedule = make_optimizer(config, plan)  # refuses a bad pretrain.decay
        self.model = build_model(config.model, "batch")
        self.manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
        state = initial_state(config, self.model, tx)
        resumed = checkpoint.restore_latest(self.manager, state)
        if resumed is not None:
            state = resumed
            logging.info("Resumed from step %d in %s", int(state.step), workdir)
        self.start = int(state.step)
        self.is_main = jax.process_index() == 0
        self.writer = metric_writers.create_default_writer(workdir, just_logging=not self.is_main)
        if self.start == 0 and self.is_main:
            # The parameter table (150+ lines) goes to a file, not the console.
            with open(os.path.join(workdir, "parameters.txt"), "w") as f:
                f.write(parameter_overview.get_parameter_overview(state.params) + "\n")
            self.writer.write_hparams({k: str(v) for k, v in config.to_dict().items()})
        logging.info("Plan: %d pre-training + %d fine-tuning steps", plan.pretrain_steps,
                     plan.finetune_steps)
        self.report = periodic_actions.ReportProgress(num_train_steps=plan.total_steps,
                                                      writer=self.writer)
        self.rstate = steps.replicate(state)
        self.progress = _Progress(plan)
        # At least five progress lines in a short run (a few hundred photos: a few dozen steps).
        self.log_every = max(1, min(int(config.log_every_steps), plan.total_steps // 5))
        self.pending: list[dict] = []

    def save_due(self, step: int) -> bool:
        return step % self.config.checkpoint_every_steps == 0 or step == self.plan.total_steps

    def after_step(self, step: int, t0: float, metrics: dict, phase: str,
                   preempted: bool) -> bool:
        """Logs the interval's metrics when one ends (or before a save or a stop); returns
        whether training stops after this step (SIGTERM, config.stop_after_steps)."""
        self.pending.append(metrics)
        self.report(step, t0)
        stop = preempted or step == self.config.stop_after_steps
        # An interval ends at a log step, a phase's or the run's last step, or a stop (the
        # console prints those), and before a save (TensorBoard only). It never spans the
        # switch: the phases' metrics have different keys.
        interval_end = (step % self.log_every == 0 or stop
                        or step in (self.plan.pretrain_steps, self.plan.total_steps))
        if interval_end or self.save_due(step):
            host = [jax.tree_util.tree_map(lambda x: np.asarray(x[0]), m)
                    for m in jax.device_get(self.pending)]
            for i, m in enumerate(host):
                _check_finite(m, step - len(host) + i + 1)
            self.pending = []
            summary = {k: float(np.mean([m[k] for m in host])) for k in host[-1]}
            summary["lr"] = float(self.schedule(step - 1))
            summary["phase"] = 0.0 if phase == "pretrain" else 1.0
            self.writer.write_scalars(step, summary)
            if self.is_main and interval_end:
                self.progress.log(step, summary)
        return stop


# Config fields the train steps never read (logging, checkpointing, stopping, evaluation): a
# resumed run that changes one of them still finds its traced steps.
_NOT_IN_STEPS = ("stop_after_steps", "checkpoint_every_steps", "keep_checkpoints",
                 "log_every_steps", "eval_batch_size")


def _traced_once(step: Callable, config: ml_collections.ConfigDict, plan: Plan, phase: str,
                 template: np.ndarray | None = None, epsilon: float | None = None) -> Callable:
    """`step` with its traced program kept on disk (`trace_cache`, on with the compilation
    cache), keyed by what the bound step's Python closes over: the config (its model, loss and
    optimizer), the plan (the lr schedule's boundaries), rho's template and a calibrated
    epsilon."""
    settings = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_STEPS}
    fingerprint = json.dumps(
        {"phase": phase, "config": settings, "plan": dataclasses.asdict(plan),
         "template": None if template is None else np.asarray(template, np.float64).tolist(),
         "epsilon": None if epsilon is None else float(epsilon)},
        sort_keys=True, default=repr)
    return trace_cache.cached(step, fingerprint)


