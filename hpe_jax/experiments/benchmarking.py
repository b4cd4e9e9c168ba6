"""Throughput benchmarks: train steps, evaluation, input pipelines, achieved FLOP/s and MFU.

What is timed, and how (`tools/benchmark.py` is the command line):
- Train steps (`benchmark_train_step`): the project's own pmapped `pretrain_step` /
  `finetune_step` (`training.steps.bind_pretrain` / `bind_finetune`), compiled once ahead of
  time, on synthetic batches that already live on the devices, so the input pipeline is
  excluded. After `warmup` steps, `repeats` runs of `steps` steps are timed, each ending with
  `block_until_ready`.
- Evaluation (`benchmark_eval`): the RGB path `DualModalityNet.predict_rgb` in inference mode,
  pmapped like the evaluator's step, same timing.
- Input pipelines (`benchmark_pipeline`): `data.pipeline.labelled_dataset` /
  `unlabelled_dataset` on a prepared TFDS dataset; host batches per second after a warm-up.
- FLOPs per step are counted analytically from the network's shapes
  (`hpe_jax.experiments.flops`, torch's flop_counter convention: forward + 2x for the backward
  of trained layers), the same on every platform; XLA's cost analysis of the compiled program
  (`flops_of`) is kept beside it as `xla_flops_per_step` (on GPU it leaves out cuDNN's
  convolutions). The peak is a timed square matmul (`matmul_peak`); MFU = analytic FLOPs per
  step / best step time / peak, per device.
- A plain ResNet classifier step (`benchmark_resnet_classifier`) gives a framework-level anchor
  (`benchmarks/torch_reference.py --model=resnet` times the same step in PyTorch).

Units: "images/s" counts the examples of the global batch per second. A pre-training example is
one labelled sample (RGB + depth, each with its positive view: the network sees 2B RGB and 2B
depth inputs and runs three encoder passes on 2B); a fine-tuning step counts its labelled plus its
unlabelled examples. Each timing reports every repeat, the best and the median, because the
machine may be shared (the best is the least disturbed run).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import jax_utils

from hpe_jax.experiments import flops as analytic
from hpe_jax.models.resnet import ResNet
from hpe_jax.objectives.pseudo_labels import normalized_template
from hpe_jax.training import config_checks
from hpe_jax.training import steps as train_steps
from hpe_jax.training.factory import build_model
from hpe_jax.training.optim import make_optimizer
from hpe_jax.training.state import TrainState

PHASES = ("pretrain", "finetune")


# ---------------------------------------------------------------------------------------------
# Timing and FLOPs


def time_loop(step: Callable[[Any], Any], carry: Any, *, steps: int, repeats: int,
              warmup: int = 1) -> tuple[list[float], Any]:
    """Seconds per call of `carry = step(carry)`, one value per repeat, and the final carry.

    `warmup` calls run first (untimed). Each repeat times `steps` calls and waits for the last
    result with `jax.block_until_ready`, so asynchronous dispatch is inside the measurement.
    """
    if steps < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1, repeats >= 1, warmup >= 0; got steps={steps}, "
                         f"repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        carry = step(carry)
    jax.block_until_ready(carry)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            carry = step(carry)
        jax.block_until_ready(carry)
        times.append((time.perf_counter() - t0) / steps)
    return times, carry


def summarize(seconds_per_step: list[float], items_per_step: int) -> dict[str, Any]:
    """Throughput summary: items/s of every repeat, best, median and worst; step times in s."""
    rates = [items_per_step / t for t in seconds_per_step]
    return {
        "images_per_s": max(rates),
        "images_per_s_median": statistics.median(rates),
        "images_per_s_worst": min(rates),
        "images_per_s_all": rates,
        "step_time_s_best": min(seconds_per_step),
        "step_time_s_all": seconds_per_step,
        "items_per_step": items_per_step,
    }


def flops_of(compiled: Any) -> float | None:
    """FLOPs of one call of a compiled JAX program (per device for pmap), from XLA's cost analysis.

    `Compiled.cost_analysis()` returns a dict in jax 0.10, a list with one dict per program in
    some older versions, and None (or raises) on backends without a cost model; None then.
    """
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001  (a backend without cost analysis is not an error here)
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    flops = float(analysis["flops"])
    return flops if flops > 0 else None


def matmul_peak(dtype: str = "float32", size: int | None = None, *, steps: int = 5,
                repeats: int = 5) -> dict[str, Any]:
    """Measured matrix-multiply peak of device 0: FLOP/s of a jitted (size x size) @ (size x size).

    Args:
      dtype: 'float32' or 'bfloat16' (inputs and output; accumulation as XLA chooses).
      size: matrix side; default 8192 on accelerators, 2048 on CPU (about 17 GFLOP a call).
    Returns:
      {'dtype', 'size', 'flops_per_s' (best repeat), 'flops_per_s_all'}.
    """
    device = jax.devices()[0]
    if size is None:
        size = 2048 if device.platform == "cpu" else 8192
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.device_put(jax.random.normal(key_a, (size, size), jnp.dtype(dtype)), device)
    b = jax.device_put(jax.random.normal(key_b, (size, size), jnp.dtype(dtype)), device)
    matmul = jax.jit(jnp.matmul)
    times, _ = time_loop(lambda _: matmul(a, b), None, steps=steps, repeats=repeats, warmup=1)
    flops = 2.0 * size**3
    return {"dtype": dtype, "size": size, "flops_per_s": flops / min(times),
            "flops_per_s_all": [flops / t for t in times]}


def _with_flops(result: dict, count: analytic.FlopCount, xla_flops_per_device: float | None,
                n_devices: int, peak: float | None) -> dict:
    """Adds FLOPs per step (analytic, global), achieved FLOP/s (best repeat) and MFU against
    `peak` (per device); XLA's count (`xla_flops_per_step`, global) and its MFU kept beside."""
    flops = count.total
    result["flops_per_step"] = flops
    result["flops_source"] = "analytic (hpe_jax.experiments.flops)"
    result["flops_breakdown"] = count.as_dict()
    achieved = flops / result["step_time_s_best"]
    result["achieved_flops_per_s"] = achieved
    result["mfu"] = None if not peak else achieved / (peak * n_devices)
    xla = None if xla_flops_per_device is None else xla_flops_per_device * n_devices
    result["xla_flops_per_step"] = xla
    result["xla_mfu"] = (None if xla is None or not peak
                         else xla / result["step_time_s_best"] / (peak * n_devices))
    return result


# ---------------------------------------------------------------------------------------------
# Synthetic batches in the pipeline's format. They stay here, not in hpe_jax/data: importing that
# package registers the TFDS builders (TensorFlow), which the GPU check must run without.


def synthetic_labelled_batch(n: int, input_size: int, output_size: int, *, seed: int = 0,
                             joints: int = 21) -> dict[str, np.ndarray]:
    """Random labelled examples with the keys and shapes of `pipeline.labelled_dataset` (N, ...)."""
    rng = np.random.default_rng(seed)
    S, s = input_size, output_size
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return {
        "image": normal(n, S, S, 3), "image_pos": normal(n, S, S, 3),
        "depth": np.tanh(normal(n, S, S, 1)), "depth_pos": np.tanh(normal(n, S, S, 1)),
        "uv": rng.uniform(0, s - 1, (n, joints, 2)).astype(np.float32),
        "z": 0.3 * normal(n, joints),
        "visibility": np.ones((n, joints), np.float32),
        "mask": (rng.uniform(size=(n, s, s, 1)) > 0.5).astype(np.float32),
        "depth_target": np.tanh(normal(n, s, s, 1)),
    }


def synthetic_unlabelled_batch(n: int, input_size: int, output_size: int, *,
                               seed: int = 1) -> dict[str, np.ndarray]:
    """Random unlabelled examples with the keys of `pipeline.unlabelled_dataset` (N, ...).

    K_weak is a plausible crop camera (focal 2.5 output widths, centred) so that the
    pseudo-label correction runs on ordinary numbers.
    """
    rng = np.random.default_rng(seed)
    S, s = input_size, output_size
    c = (s - 1) / 2.0
    K = np.array([[2.5 * s, 0.0, c], [0.0, 2.5 * s, c], [0.0, 0.0, 1.0]], np.float32)
    return {
        "image_weak": rng.normal(size=(n, S, S, 3)).astype(np.float32),
        "image_strong": rng.normal(size=(n, S, S, 3)).astype(np.float32),
        "weak_to_strong": np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
        "K_weak": np.tile(K, (n, 1, 1)),
    }


def to_devices(batch: Any, n_devices: int) -> Any:
    """[N, ...] host arrays -> [n_devices, N / n_devices, ...] arrays sharded over the devices."""
    def split(x):
        if x.shape[0] % n_devices:
            raise ValueError(f"batch of {x.shape[0]} does not split over {n_devices} devices; "
                             "use a global batch size divisible by the device count")
        return x.reshape((n_devices, -1) + x.shape[1:])

    # The identity under pmap leaves every shard on its device in pmap's own layout.
    return jax.pmap(lambda t: t)(jax.tree_util.tree_map(split, batch))


def host_init(model: nn.Module, input_size: int, seed: int = 0) -> dict:
    """Variables of every path of `model`, with the structure `model.init` gives, made on the host.

    Throughput does not depend on the values, and compiling the jitted `init` of the dual network
    costs tens of seconds on a CPU (one random kernel per parameter, plus the traced forward
    passes). So the tree comes from `jax.eval_shape` and is filled with numpy: kernels
    He-normal over fan-in, BatchNorm scales and variances 1, biases and means 0, `beta` 1.
    """
    rgb = jnp.zeros((1, input_size, input_size, 3), jnp.float32)
    depth = jnp.zeros((1, input_size, input_size, 1), jnp.float32)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                            rgb, depth)
    return _fill(shapes, np.random.default_rng(seed))


def _fill(shapes: Any, rng: np.random.Generator) -> Any:
    def leaf(path, s):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            fan_in = int(np.prod(s.shape[:-1]))
            x = rng.normal(scale=np.sqrt(2.0 / max(fan_in, 1)), size=s.shape)
        elif name in ("scale", "var", "beta"):
            x = np.ones(s.shape)
        else:  # bias, mean
            x = np.zeros(s.shape)
        return jnp.asarray(x, s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


# ---------------------------------------------------------------------------------------------
# The project's train steps, evaluation and input pipelines


def phase_batch(config: ml_collections.ConfigDict, phase: str) -> tuple[dict, int]:
    """A host batch of random data for `phase`'s step at the config's sizes, and its images."""
    S, s = config.data.input_size, config.data.output_size
    if phase == "pretrain":
        n = config.pretrain.batch_size
        return synthetic_labelled_batch(n, S, s), n
    n_src, n_tgt = config.finetune.batch_size, config.finetune.unlabelled_batch_size
    return ({"source": synthetic_labelled_batch(n_src, S, s),
             "target": synthetic_unlabelled_batch(n_tgt, S, s)}, n_src + n_tgt)


def prepared_train_step(config: ml_collections.ConfigDict, phase: str) -> tuple[
        Callable[..., Any], tuple[Any, Any, Any], int]:
    """The project's pmapped `phase` step, bound as `loop.py` binds it, with its arguments.

    Returns (step, (replicated state, device batch, per-device rngs), images per step): the
    state is a host-made `host_init` (the structure of `factory.initial_state`), the batch
    random (`phase_batch`) split over all local devices.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    n_dev = jax.local_device_count()
    model = build_model(config.model, "batch")
    tx = make_optimizer(optax.constant_schedule(config.pretrain.lr), config.optim.b1,
                        config.optim.b2, config.optim.clip_norm)
    state = TrainState.create(host_init(model, config.data.input_size), tx)
    if phase == "pretrain":
        step = train_steps.bind_pretrain(model, config)
    else:
        step = train_steps.bind_finetune(model, config, normalized_template())
    host_batch, items = phase_batch(config, phase)
    args = (train_steps.replicate(state), to_devices(host_batch, n_dev),
            jax.random.split(jax.random.PRNGKey(0), n_dev))
    return step, args, items


def benchmark_train_step(config: ml_collections.ConfigDict, phase: str, *, steps: int = 10,
                         repeats: int = 3, warmup: int = 2,
                         peak_flops_per_s: float | None = None) -> dict[str, Any]:
    """Images/s, FLOPs and MFU of the project's pmapped pre-training or fine-tuning step.

    The batch sizes, network and loss switches come from `config` (as `loop.py` binds them);
    the state is a host-made `host_init` (same structure as `factory.initial_state`).
    """
    step, (rstate, batch, rngs), items = prepared_train_step(config, phase)
    n_dev = jax.local_device_count()
    t0 = time.perf_counter()
    compiled = step.lower(rstate, batch, rngs).compile()
    compile_s = time.perf_counter() - t0

    def run(carry):
        new_state, metrics = compiled(carry[0], batch, rngs)
        return new_state, metrics["loss"]

    times, (_, loss) = time_loop(run, (rstate, None), steps=steps, repeats=repeats,
                                 warmup=warmup)
    result = summarize(times, items)
    result.update(phase=phase, compile_s=compile_s, devices=n_dev,
                  final_loss=float(np.asarray(loss)[0]))
    count = (analytic.pretrain_step(config) if phase == "pretrain"
             else analytic.finetune_step(config))
    return _with_flops(result, count, flops_of(compiled), n_dev, peak_flops_per_s)


def benchmark_eval(config: ml_collections.ConfigDict, *, batch_size: int | None = None,
                   steps: int = 10, repeats: int = 3, warmup: int = 2,
                   peak_flops_per_s: float | None = None) -> dict[str, Any]:
    """Images/s of the RGB path in inference mode (`predict_rgb` -> uv, z), pmapped and compiled.

    batch_size: global; default `config.eval_batch_size`.
    """
    n_dev = jax.local_device_count()
    batch_size = batch_size or config.eval_batch_size
    model = build_model(config.model, "batch")
    S = config.data.input_size
    variables = host_init(model, S)

    def predict(v, image):
        y = model.apply(v, image, train=False, method=model.predict_rgb)
        return y["uv"], y["z"]

    step = jax.pmap(predict, axis_name="batch")
    images = to_devices(np.random.default_rng(0).normal(size=(batch_size, S, S, 3))
                        .astype(np.float32), n_dev)
    rvars = jax_utils.replicate(variables)
    t0 = time.perf_counter()
    compiled = step.lower(rvars, images).compile()
    compile_s = time.perf_counter() - t0
    times, _ = time_loop(lambda _: compiled(rvars, images), None, steps=steps, repeats=repeats,
                         warmup=warmup)
    result = summarize(times, batch_size)
    result.update(compile_s=compile_s, devices=n_dev)
    return _with_flops(result, analytic.eval_step(config, batch_size), flops_of(compiled), n_dev,
                       peak_flops_per_s)


def benchmark_pipeline(config: ml_collections.ConfigDict, kind: str, *, batches: int = 20,
                       repeats: int = 3, warmup: int = 3) -> dict[str, Any]:
    """Host-side batches/s of `labelled_dataset` ('labelled') or `unlabelled_dataset`.

    Uses `config.data` (source for 'labelled', target for 'unlabelled', their train splits) and
    the pre-training / fine-tuning batch sizes. The dataset must be prepared in
    `config.data.data_dir`. The first batch (graph building, file opening) is timed apart as
    `startup_s`.
    """
    from hpe_jax.data import pipeline  # TensorFlow only when asked for

    data = config.data
    common = dict(data_dir=data.data_dir or None, input_size=data.input_size,
                  output_size=data.output_size, train=True, seed=config.seed)
    t0 = time.perf_counter()
    if kind == "labelled":
        n = config.pretrain.batch_size
        it = pipeline.labelled_dataset(data.source, data.source_split, global_batch_size=n,
                                       depth_cube_mm=data.depth_cube_mm, **common)
    elif kind == "unlabelled":
        n = config.finetune.unlabelled_batch_size
        it = pipeline.unlabelled_dataset(data.target, data.target_split, global_batch_size=n,
                                         **common)
    else:
        raise ValueError(f"pipeline kind must be 'labelled' or 'unlabelled', got {kind!r}")
    next(it)
    startup = time.perf_counter() - t0
    times, _ = time_loop(lambda _: next(it), None, steps=batches, repeats=repeats,
                         warmup=warmup)
    result = summarize(times, n)
    result.update(kind=kind, startup_s=startup,
                  dataset=data.source if kind == "labelled" else data.target)
    return result


# ---------------------------------------------------------------------------------------------
# Framework anchor: a plain ResNet classifier training step


class ResNetClassifier(nn.Module):
    """`resnet.ResNet` + global average pool + a linear classifier (torchvision's resnetXX)."""

    depth: int = 18
    width: float = 1.0
    num_classes: int = 1000
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """(N, S, S, 3) -> (N, num_classes) float32 logits."""
        f = ResNet(self.depth, self.width, dtype=self.dtype)(x, train=train)[-1]
        f = jnp.mean(f.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                        name="fc")(f).astype(jnp.float32)


def benchmark_resnet_classifier(*, depth: int = 18, image_size: int = 128, batch_size: int = 32,
                                dtype: str = "float32", steps: int = 5, repeats: int = 3,
                                warmup: int = 2,
                                peak_flops_per_s: float | None = None) -> dict[str, Any]:
    """Images/s of a jitted ResNet classifier training step: softmax cross-entropy, Adam.

    One device (jit, not pmap), random images and labels already on the device, BatchNorm in
    training mode, Adam(1e-3, b1=0.9, b2=0.99) as `torch_reference.py --model=resnet`.
    """
    model = ResNetClassifier(depth=depth, dtype=jnp.dtype(dtype))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(batch_size, image_size, image_size, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 1000, batch_size), jnp.int32)
    variables = _fill(jax.eval_shape(functools.partial(model.init, train=False),
                                     jax.random.PRNGKey(0), images[:1]), rng)
    tx = optax.adam(1e-3, b1=0.9, b2=0.99)
    carry = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    def train_step(carry, images, labels):
        params, batch_stats, opt_state = carry

        def loss_fn(p):
            logits, upd = model.apply({"params": p, "batch_stats": batch_stats}, images,
                                      train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, upd["batch_stats"]

        grads, new_stats = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state

    t0 = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0,)).lower(carry, images, labels).compile()
    compile_s = time.perf_counter() - t0
    times, _ = time_loop(lambda c: compiled(c, images, labels), carry, steps=steps,
                         repeats=repeats, warmup=warmup)
    result = summarize(times, batch_size)
    result.update(model=f"resnet{depth}", image_size=image_size, batch_size=batch_size,
                  dtype=dtype, compile_s=compile_s, devices=1)
    count = analytic.resnet_classifier_step(depth=depth, image_size=image_size,
                                            batch_size=batch_size)
    return _with_flops(result, count, flops_of(compiled), 1, peak_flops_per_s)


# ---------------------------------------------------------------------------------------------
# Everything at once

ALL_BENCHMARKS = ("peak", "pretrain", "finetune", "eval", "pipeline", "resnet")


def run_benchmarks(
    config: ml_collections.ConfigDict,
    which: Iterable[str] = ("peak", "pretrain", "finetune", "eval"),
    *,
    steps: int = 10,
    repeats: int = 3,
    warmup: int = 2,
    peak_size: int | None = None,
    resnet: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the chosen benchmarks of `ALL_BENCHMARKS`; a JSON-serialisable dict of results.

    The matmul peak is measured in float32 and, when the model computes in another dtype, in that
    dtype too; MFU is taken against the peak of the model's compute dtype. `resnet` holds keyword
    arguments of `benchmark_resnet_classifier` (depth, image_size, batch_size, dtype).
    """
    which = list(which)
    unknown = sorted(set(which) - set(ALL_BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {list(ALL_BENCHMARKS)}")
    config_checks.resolve(config)  # configs/default.py leaves output_size / uv_scale derived
    device = jax.devices()[0]
    out: dict[str, Any] = {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "devices": jax.local_device_count(),
        "jax_version": jax.__version__,
        "model": {**{k: config.model[k] for k in ("resnet_depth", "width", "deconv_features",
                                                  "proj_hidden", "proj_dim", "dtype")},
                  "scan_blocks": bool(config.model.scan_blocks)},
        "input_size": config.data.input_size,
        "timing": {"steps": steps, "repeats": repeats, "warmup": warmup},
    }
    dtype = str(config.model.dtype)
    peaks: dict[str, float] = {}
    if "peak" in which or any(w in which for w in ("pretrain", "finetune", "eval", "resnet")):
        for d in dict.fromkeys(["float32", dtype]):
            log(f"matmul peak {d} ...")
            res = matmul_peak(d, peak_size)
            peaks[d] = res["flops_per_s"]
            out[f"peak_{d}"] = res
    peak = peaks.get(dtype)
    for phase in PHASES:
        if phase in which:
            log(f"{phase} step ...")
            out[f"train_{phase}"] = benchmark_train_step(
                config, phase, steps=steps, repeats=repeats, warmup=warmup,
                peak_flops_per_s=peak)
    if "eval" in which:
        log("evaluation ...")
        out["eval"] = benchmark_eval(config, steps=steps, repeats=repeats, warmup=warmup,
                                     peak_flops_per_s=peak)
    if "pipeline" in which:
        for kind in ("labelled", "unlabelled"):
            log(f"{kind} input pipeline ...")
            out[f"pipeline_{kind}"] = benchmark_pipeline(config, kind, batches=steps,
                                                         repeats=repeats, warmup=warmup)
    if "resnet" in which:
        kwargs = dict(resnet or {})
        r_dtype = kwargs.get("dtype", "float32")
        if r_dtype not in peaks:
            peaks[r_dtype] = matmul_peak(r_dtype, peak_size)["flops_per_s"]
        log("resnet classifier step ...")
        out["resnet_classifier"] = benchmark_resnet_classifier(
            steps=steps, repeats=repeats, warmup=warmup, peak_flops_per_s=peaks[r_dtype],
            **kwargs)
    return out
