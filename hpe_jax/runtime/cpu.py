"""The devices as the tools set them up: how many XLA:CPU devices the host is split into and
which library runs XLA:CPU's convolutions (`$HPE_JAX_CPU_CONV`), both before JAX starts, and
TensorFlow kept off the accelerators."""

from __future__ import annotations

import functools
import os


class UsageError(Exception):
    """A mistake on the command line or in the environment (exit status 2): the message says
    what to change."""


CONV_ENV_VAR = "HPE_JAX_CPU_CONV"
CONV_CHOICES = ("auto", "ynn", "xla")
# XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK as "individual convolution" fusions;
# removing that fusion type leaves them to XLA's own convolution emitter.
_NO_YNN_CONV = ("--xla_cpu_experimental_ynn_fusion_type="
                "-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION")


def cpu_has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU reports AVX-512F (Linux `cpuinfo` flags); None where that is unknown."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        return None
    return None


@functools.cache
def host_has_avx512() -> bool | None:
    """`cpu_has_avx512` of this host, read once: start-up asks it for the convolutions, the
    devices and `model.conv_grad`."""
    return cpu_has_avx512()


def choose_cpu_convolutions(choice: str | None = None, avx512: bool | None = None) -> str:
    """Before JAX starts: which library runs XLA:CPU's convolutions; returns 'ynn' or 'xla'.

    choice: 'ynn' (XLA:CPU's default, YNNPACK), 'xla' (XLA's own emitter) or 'auto'; None reads
    `$HPE_JAX_CPU_CONV` (default 'auto'). 'auto' is 'xla' on an x86 CPU without AVX-512 and
    'ynn' elsewhere. Measured side by side on a 2-core AVX2 EPYC (docs/benchmarks.md, "CPU
    convolutions"): the `make reproduce` network's pre-training step 16.3 -> 24.2 images/s and
    its fine-tuning step 43.8 -> 56.3 images/s with 'xla'; on AVX-512 CPUs, where the project's
    earlier numbers were measured with YNNPACK, it is not measured, so 'auto' keeps it there.
    Only the kernels change (the same function, float rounding aside). An XLA_FLAGS that already
    sets the fusion types wins. Accelerators are unaffected.
    """
    choice = (choice or os.environ.get(CONV_ENV_VAR, "auto")).strip().lower()
    if choice not in CONV_CHOICES:
        raise UsageError(f"{CONV_ENV_VAR}={choice!r} is not one of {', '.join(CONV_CHOICES)}")
    if choice == "auto":
        if avx512 is None:
            avx512 = host_has_avx512()
        choice = "xla" if avx512 is False else "ynn"
    flags_now = os.environ.get("XLA_FLAGS", "")
    if choice == "xla" and "--xla_cpu_experimental_ynn_fusion_type" not in flags_now:
        os.environ["XLA_FLAGS"] = f"{flags_now} {_NO_YNN_CONV}".strip()
    return choice


def default_cpu_devices(avx512: bool | None = None, cores: int | None = None) -> int:
    """How many XLA:CPU devices the tools split the host into unless told (`--cpu_devices`).

    1 on an x86 CPU without AVX-512, min(2, cores) elsewhere. Measured side by side
    (docs/benchmarks.md, `benchmarks/side_by_side.py`): on a 2-core AVX2 EPYC (XLA's own
    convolutions, `choose_cpu_convolutions`) one device runs the `make reproduce` network's
    pre-training step 9% and its fine-tuning step 19% faster than two; on a 2-core AVX-512 Xeon
    (YNNPACK) two devices ran pre-training 14% faster than one. The same computation either way
    (float rounding aside).
    """
    if avx512 is None:
        avx512 = host_has_avx512()
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return 1 if avx512 is False else max(1, min(2, cores))


def split_cpu_into_devices(count: int) -> None:
    """Before JAX starts: expose the host as `count` XLA:CPU devices (no-op for count <= 1 or
    when XLA_FLAGS already sets a device count). The training loop then runs data parallel over
    them with synchronised BatchNorm (the same computation as one device with the whole batch),
    which keeps more of the cores busy where XLA's threads do not (`default_cpu_devices` says
    where that pays). Accelerators stay JAX's default."""
    flag = "--xla_force_host_platform_device_count"
    if count > 1 and flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}={count}".strip()


def keep_tensorflow_off_accelerators() -> None:
    """Hides the GPUs from TensorFlow (imported here, for tf.data only), so that the input
    pipeline never takes the accelerator memory JAX needs. A TensorFlow already initialised
    by the caller keeps its choice."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass
