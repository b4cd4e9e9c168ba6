"""The dual-modality network and its pre-training step in PyTorch, timed like tools/benchmark.py.

PyTorch is an optional dependency, not part of the project (nothing imports this file):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy
    /tmp/torchenv/bin/python benchmarks/torch_reference.py --model=dual --depth=18 --width=0.25 \
        --image_size=64 --batch_size=16 --deconv_features=64 --proj_hidden=128 --proj_dim=64 \
        --output=runs/bench/torch_dual_cpu.json
    /tmp/torchenv/bin/python benchmarks/torch_reference.py --model=resnet --depth=18 \
        --image_size=128 --batch_size=32
    # GPU: add --device=cuda --amp --channels_last  (bfloat16 autocast; params stay float32)

`--model=dual` is the same network as `hpe_jax.models.DualModalityNet` (torchvision-topology
ResNet encoders E_R and E_D with a width multiplier, Eq. 1 depth attention at the five sites
with the same epsilon guard, the shared SimpleBaseline decoder with the integral 2.5D read-out,
the two projection heads) and the same step as `hpe_jax.training.steps.pretrain_step` with the
default loss switches: both views stacked along the batch, L_s = M(y_R) + M(y_D) + M(y_F) on the
first view, the four NT-Xent terms of Eq. 3 (paper form, tau 0.5), lambda_c 0.1, Adam with betas
(0.9, 0.99). `--phase=finetune` times `hpe_jax.training.steps.finetune_step` instead
(`--batch_size` labelled source images + `--unlabelled_batch_size` target images per step): L_s
on the three ways, the EMA teacher's two passes on the weak target view, the student's two
passes on the strong view, L_l on both ways and L_d, Adam, the teacher's EMA update; the
pseudo-label's kinematic correction (per-joint geometry, no convolution) is left out and the
losses keep the squared form.
`--model=resnet` is a plain ResNet classifier step (softmax cross-entropy, Adam),
as `hpe_jax.experiments.benchmarking.benchmark_resnet_classifier`.

Timing: `--warmup` untimed steps, then `--repeats` runs of `--steps` steps, each ending with a
device synchronisation; images/s counts the examples of the batch (for `dual`, a labelled
sample with its positive view, as in the JAX benchmark). FLOPs per step come from
`torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions, forward and backward)
and the peak from a timed square matmul, so MFU is this framework's own estimate.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

RESNET_SPECS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
STAGE_PLANES = (64, 128, 256, 512)
NUM_JOINTS = 21


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


# ---------------------------------------------------------------------------------------------
# Network


class Block(nn.Module):
    """BasicBlock or Bottleneck (v1.5: the stride on the 3x3), torchvision's layout."""

    def __init__(self, kind: str, in_ch: int, planes: int, stride: int):
        super().__init__()
        self.kind = kind
        out_ch = planes * (4 if kind == "bottleneck" else 1)
        if kind == "basic":
            self.convs = nn.ModuleList([
                nn.Conv2d(in_ch, planes, 3, stride, 1, bias=False),
                nn.Conv2d(planes, planes, 3, 1, 1, bias=False)])
            self.bns = nn.ModuleList([nn.BatchNorm2d(planes), nn.BatchNorm2d(planes)])
        else:
            self.convs = nn.ModuleList([
                nn.Conv2d(in_ch, planes, 1, bias=False),
                nn.Conv2d(planes, planes, 3, stride, 1, bias=False),
                nn.Conv2d(planes, out_ch, 1, bias=False)])
            self.bns = nn.ModuleList([nn.BatchNorm2d(planes), nn.BatchNorm2d(planes),
                                      nn.BatchNorm2d(out_ch)])
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_ch))
        self.out_ch = out_ch

    def forward(self, x):
        y = x
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            y = bn(conv(y))
            if i < last:
                y = F.relu(y)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + y)


class ResNet(nn.Module):
    """Encoder without classifier; `forward(x, hook)` applies hook(site, f) at the five sites."""

    def __init__(self, depth: int, width: float, in_ch: int, stem_pool: bool = True):
        super().__init__()
        self.stem_pool = stem_pool
        kind, blocks = RESNET_SPECS[depth]
        c0 = scaled(64, width)
        self.conv1 = nn.Conv2d(in_ch, c0, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c0)
        stages, ch = [], c0
        for s, (planes, n) in enumerate(zip(STAGE_PLANES, blocks, strict=True)):
            layer = []
            for k in range(n):
                b = Block(kind, ch, scaled(planes, width), 2 if (s > 0 and k == 0) else 1)
                ch = b.out_ch
                layer.append(b)
            stages.append(nn.Sequential(*layer))
        self.stages = nn.ModuleList(stages)
        self.out_channels = ch

    def forward(self, x, hook=None):
        hook = hook or (lambda _, f: f)
        x = hook(0, F.relu(self.bn1(self.conv1(x))))
        if self.stem_pool:
            x = F.max_pool2d(x, 3, 2, 1)
        for s, stage in enumerate(self.stages):
            x = hook(s + 1, stage(x))
        return x


def attention_weights(f, eps: float):
    """Eq. 1 with the project's guard: (N, C, H, W) -> (N, 1, H, W), mean 1, in float32."""
    f32 = f.float()
    f_bar = f32.mean(dim=(2, 3), keepdim=True)
    s = (f32 * f_bar).sum(dim=1, keepdim=True)
    return ((s + eps) / (s.mean(dim=(2, 3), keepdim=True) + eps)).to(f.dtype)


class Decoder(nn.Module):
    """Three 4x4/2 deconvolutions with BN + ReLU, the four 1x1 heads, the integral read-out."""

    def __init__(self, in_ch: int, features: int, joints: int = NUM_JOINTS, num_deconv: int = 3):
        super().__init__()
        layers, ch = [], in_ch
        for _ in range(num_deconv):
            layers += [nn.ConvTranspose2d(ch, features, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(features), nn.ReLU()]
            ch = features
        self.deconv = nn.Sequential(*layers)
        self.heatmap = nn.Conv2d(features, joints, 1)
        self.latent_depth = nn.Conv2d(features, joints, 1)
        self.mask = nn.Conv2d(features, 1, 1)
        self.depth_map = nn.Conv2d(features, 1, 1)
        self.beta = nn.Parameter(torch.ones(()))

    def forward(self, x):
        x = self.deconv(x)
        logits = self.heatmap(x).float()
        n, j, h, w = logits.shape
        probs = torch.softmax((self.beta * logits).reshape(n, j, h * w), -1).reshape(n, j, h, w)
        cols = torch.arange(w, device=x.device, dtype=torch.float32)
        rows = torch.arange(h, device=x.device, dtype=torch.float32)
        u = (probs.sum(2) * cols).sum(-1)
        v = (probs.sum(3) * rows).sum(-1)
        z = (probs * self.latent_depth(x).float()).sum(dim=(2, 3))
        return {"uv": torch.stack([u, v], -1), "z": z,
                "mask": torch.sigmoid(self.mask(x).float()),
                "depth_map": self.depth_map(x).float()}


class Projection(nn.Module):
    def __init__(self, in_ch: int, hidden: int, dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(in_ch, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        x = self.fc2(F.relu(self.fc1(x.float().mean(dim=(2, 3)).to(x.dtype)))).float()
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class DualModalityNet(nn.Module):
    """E_R, E_D (self-attended), fused E_R, the shared decoder, the two projection heads."""

    def __init__(self, depth: int, width: float, deconv: int, proj_hidden: int, proj_dim: int,
                 eps: float = 1e-6, stem_pool: bool = True, num_deconv: int = 3,
                 fused_depth: str = "measured"):
        super().__init__()
        self.fused_depth = fused_depth
        self.rgb_encoder = ResNet(depth, width, 3, stem_pool)
        self.depth_encoder = ResNet(depth, width, 1, stem_pool)
        c = self.rgb_encoder.out_channels
        self.decoder = Decoder(c, deconv, num_deconv=num_deconv)
        self.rgb_projection = Projection(c, proj_hidden, proj_dim)
        self.depth_projection = Projection(c, proj_hidden, proj_dim)
        self.eps = eps

    def head(self, s, projection):
        y = self.decoder(s)
        y["projection"] = projection(s)
        return y

    def two_pass(self, rgb):
        """hpe_jax's DualModalityNet.two_pass: the RGB way, then the fused way with attention
        from E_D on the RGB way's own depth map (upsampled, clipped, no gradient)."""
        y_r = self.head(self.rgb_encoder(rgb), self.rgb_projection)
        weights = []

        def self_attend(site, f):
            w = attention_weights(f, self.eps)
            weights.append(w)
            return w * f

        d_r = F.interpolate(y_r["depth_map"].detach(), size=rgb.shape[-2:], mode="bilinear",
                            align_corners=False).clamp(-1.0, 1.0)
        self.depth_encoder(d_r, self_attend)
        s_f = self.rgb_encoder(rgb, lambda site, f: weights[site] * f)
        return y_r, self.head(s_f, self.rgb_projection)

    def forward(self, rgb, depth):
        weights = []

        def self_attend(site, f):
            w = attention_weights(f, self.eps)
            weights.append(w)
            return w * f

        out = {"rgb": self.head(self.rgb_encoder(rgb), self.rgb_projection)}
        out["depth"] = self.head(self.depth_encoder(depth, self_attend), self.depth_projection)
        if self.fused_depth == "predicted":
            # pretrain.fused_depth='predicted': the attention of the fused way comes from the
            # RGB way's own depth map (upsampled, clipped, no gradient), one more E_D pass.
            d_r = F.interpolate(out["rgb"]["depth_map"].detach(), size=rgb.shape[-2:],
                                mode="bilinear", align_corners=False).clamp(-1.0, 1.0)
            weights.clear()
            self.depth_encoder(d_r, self_attend)
        s_f = self.rgb_encoder(rgb, lambda site, f: weights[site] * f)
        out["fused"] = self.head(s_f, self.rgb_projection)
        return out


# ---------------------------------------------------------------------------------------------
# Losses (hpe_jax.objectives.pose.multimodal_loss and contrastive.nt_xent, 'paper' form)


def multimodal_loss(pred, tgt, lambda_z=50.0, lambda_m=100.0, lambda_dm=50.0):
    pose = (((pred["uv"] - tgt["uv"]) ** 2).sum(-1) + lambda_z * (pred["z"] - tgt["z"]) ** 2)
    mask = (pred["mask"] - tgt["mask"]).abs().mean()
    dmap = (pred["depth_map"] - tgt["depth_target"]).abs().mean()
    return pose.mean() + lambda_m * mask + lambda_dm * dmap


def nt_xent(z, zp, tau=0.5):
    z, zp = F.normalize(z.float(), dim=-1), F.normalize(zp.float(), dim=-1)
    own = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    s_zz, s_zp = z @ z.T / tau, z @ zp.T / tau
    positive = s_zp.diagonal()
    neg = torch.cat([s_zz.masked_fill(own, float("-inf")), s_zp.masked_fill(own, float("-inf"))],
                    -1)
    return (torch.logsumexp(neg, -1) - positive).mean()


def pretrain_loss(out, batch, n, lambda_c=0.1):
    first = lambda y: {k: v[:n] for k, v in y.items()}  # noqa: E731
    second = lambda y: {k: v[n:] for k, v in y.items()}  # noqa: E731
    l_s = sum(multimodal_loss(first(out[k]), batch) for k in ("rgb", "depth", "fused"))
    v = {k: first(out[k])["projection"] for k in out}
    p = {k: second(out[k])["projection"] for k in out}
    l_c = (nt_xent(v["rgb"], p["rgb"]) + nt_xent(v["depth"], p["depth"])
           + nt_xent(v["rgb"], v["fused"]) + nt_xent(p["rgb"], p["fused"]))
    return l_s + lambda_c * l_c


def pose_term(pred, uv, z, weights, lambda_z=50.0):
    """The pose part of M per image, weighted (L_l's kept pseudo-labels)."""
    per = (((pred["uv"] - uv) ** 2).sum(-1) + lambda_z * (pred["z"] - z) ** 2).mean(-1)
    return (per * weights).sum() / weights.sum().clamp_min(1.0)


def pseudo_labels(t_r, t_f, lambda_z=50.0):
    """r and its keep mask from the teacher's two passes (Eq. 8, C(r) <= epsilon). The
    kinematic correction rho of hpe_jax (per-joint geometry on 21 x N points, no convolution)
    is left out: r is the mean of the two passes and epsilon the batch's median C."""
    uvs, zs = torch.stack([t_r["uv"], t_f["uv"]]), torch.stack([t_r["z"], t_f["z"]])
    r_uv, r_z = uvs.mean(0), zs.mean(0)
    conf = (((uvs - r_uv) ** 2).sum(-1) + lambda_z * (zs - r_z) ** 2).mean((0, 2))
    return r_uv, r_z, (conf <= conf.median()).float()


def finetune_loss(model, teacher, batch, target, lambda_l=1.0, lambda_dist=0.2):
    """hpe_jax.training.steps.finetune_step's loss: L_s on the labelled source batch (the three
    ways, the fused one on predicted depth as in pre-training), then the teacher's two passes
    on the weak target view (inference, no gradient), the student's two passes on the strong
    view, L_l on p_R and p_F (pseudo_on='both') and L_d = M(y_R, sg(y_F))."""
    out = model(batch["image"], batch["depth"])
    l_s = sum(multimodal_loss(out[k], batch) for k in ("rgb", "depth", "fused"))
    with torch.no_grad():
        t_r, t_f = teacher.two_pass(target["image_weak"])
        r_uv, r_z, keep = pseudo_labels(t_r, t_f)
    y_r, y_f = model.two_pass(target["image_strong"])
    l_l = pose_term(y_r, r_uv, r_z, keep) + pose_term(y_f, r_uv, r_z, keep)
    fixed = {k: v.detach() for k, v in y_f.items()}
    l_d = multimodal_loss(y_r, {"uv": fixed["uv"], "z": fixed["z"], "mask": fixed["mask"],
                                "depth_target": fixed["depth_map"]})
    return l_s + lambda_l * l_l + lambda_dist * l_d


@torch.no_grad()
def ema_update(teacher, model, decay):
    """The EMA teacher's update after the optimizer step: parameters and BatchNorm buffers."""
    for t, m in zip(teacher.state_dict().values(), model.state_dict().values(), strict=True):
        if t.dtype.is_floating_point:
            t.lerp_(m, 1.0 - decay)
        else:
            t.copy_(m)


# ---------------------------------------------------------------------------------------------
# Benchmark


def synthetic_batch(n, size, device, memory_format):
    g = torch.Generator().manual_seed(0)
    s = size // 4
    rnd = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    img = lambda c: rnd(n, c, size, size).to(device).contiguous(memory_format=memory_format)  # noqa: E731
    return {"image": img(3), "image_pos": img(3), "depth": torch.tanh(img(1)),
            "depth_pos": torch.tanh(img(1)),
            "uv": (torch.rand(n, NUM_JOINTS, 2, generator=g) * (s - 1)).to(device),
            "z": (0.3 * rnd(n, NUM_JOINTS)).to(device),
            "mask": (torch.rand(n, 1, s, s, generator=g) > 0.5).float().to(device),
            "depth_target": torch.tanh(rnd(n, 1, s, s)).to(device)}


def make_step(args, device, memory_format):
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[args.amp_dtype]
    after_update = None
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if args.amp else \
        contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and args.amp_dtype == "float16")
    n = args.batch_size
    if args.model == "dual":
        model = DualModalityNet(args.depth, args.width, args.deconv_features, args.proj_hidden,
                                args.proj_dim, stem_pool=not args.no_stem_pool,
                                num_deconv=args.num_deconv, fused_depth=args.fused_depth)
        batch = synthetic_batch(n, args.image_size, device, memory_format)
        if args.phase == "finetune":
            unlabelled = synthetic_batch(args.unlabelled_batch_size, args.image_size, device,
                                         memory_format)
            target = {"image_weak": unlabelled["image"], "image_strong": unlabelled["image_pos"]}
            teacher = copy.deepcopy(model).to(device=device, memory_format=memory_format).eval()
            compute_loss = lambda m: finetune_loss(m, teacher, batch, target)  # noqa: E731
            after_update = lambda m: ema_update(teacher, m, args.ema_decay)  # noqa: E731
        else:
            rgb = torch.cat([batch["image"], batch["image_pos"]])
            depth = torch.cat([batch["depth"], batch["depth_pos"]])
            compute_loss = lambda m: pretrain_loss(m(rgb, depth), batch, n)  # noqa: E731
    else:
        encoder = ResNet(args.depth, args.width, 3)
        model = nn.Sequential(encoder, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(encoder.out_channels, 1000))
        g = torch.Generator().manual_seed(0)
        images = torch.randn(n, 3, args.image_size, args.image_size, generator=g).to(device)
        images = images.contiguous(memory_format=memory_format)
        labels = torch.randint(0, 1000, (n,), generator=g).to(device)
        compute_loss = lambda m: F.cross_entropy(m(images), labels)  # noqa: E731
    model = model.to(device=device, memory_format=memory_format).train()
    lr = 2.5e-4 if args.model == "dual" else 1e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    forward = torch.compile(model) if args.compile else model

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = compute_loss(forward)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if after_update is not None:
            after_update(model)
        return loss

    return step, model


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_loop(fn, device, steps, repeats, warmup):
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            out = fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) / steps)
    return times, out


# torch.profiler's leaf ops grouped as benchmarks/profile_step.py groups XLA's (first match wins).
PROFILE_KINDS = (
    ("convolutions: backward (input and weight gradients)", ("convolution_backward",)),
    ("convolutions: forward", ("convolution", "conv2d", "conv_transpose")),
    ("BatchNorm (statistics, apply, backward)", ("batch_norm",)),
    ("optimizer (Adam, EMA)", ("_foreach", "adam", "lerp")),
    ("matrix products", ("mm", "matmul", "linear", "bmm")),
    ("copies and layout", ("copy", "clone", "contiguous", "cat", "stack", "to", "empty",
                           "zero", "fill", "as_strided", "view", "reshape", "permute",
                           "transpose", "slice", "select", "index", "unsqueeze", "expand")),
    ("elementwise and the rest (ReLU, losses, attention)", ("clamp",)),  # not a 'min' reduction
    ("reductions", ("sum", "mean", "max", "min", "norm", "logsumexp", "softmax")),
)


def profile_kind(name: str) -> str:
    """The kind of a torch op (e.g. 'aten::mkldnn_convolution') for the per-kind table."""
    op = name.split("::")[-1].lower()
    for kind, keys in PROFILE_KINDS:
        if any(k in op for k in keys):
            return kind
    return "elementwise and the rest (ReLU, losses, attention)"


def profile_steps(fn, steps: int) -> dict:
    """Self CPU time per op kind and the 15 largest ops, ms per step, over `steps` steps."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    wall = (time.perf_counter() - t0) / steps * 1e3
    ops = [(e.key, e.self_cpu_time_total / 1e3 / steps) for e in prof.key_averages()]
    kinds: dict[str, float] = {}
    for name, ms in ops:
        kind = profile_kind(name)
        kinds[kind] = kinds.get(kind, 0.0) + ms
    total = sum(kinds.values())
    return {"op_ms_per_step": round(total, 1), "wall_ms_per_step_profiled": round(wall, 1),
            "kinds": {k: {"ms": round(v, 1), "share": round(v / total, 3)}
                      for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top_ops": [{"op": n, "kind": profile_kind(n), "ms": round(ms, 2)}
                        for n, ms in sorted(ops, key=lambda kv: -kv[1])[:15]]}


def matmul_peak(device, size, dtype):
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times, _ = time_loop(lambda: a @ b, device, 5, 3, 1)
    return 2.0 * size**3 / min(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["dual", "resnet"], default="dual")
    p.add_argument("--depth", type=int, default=18, choices=sorted(RESNET_SPECS))
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--deconv_features", type=int, default=256)
    p.add_argument("--proj_hidden", type=int, default=512)
    p.add_argument("--proj_dim", type=int, default=128)
    p.add_argument("--no_stem_pool", action="store_true",
                   help="drop the max-pool after conv1 (model.stem_pool=False)")
    p.add_argument("--num_deconv", type=int, default=3, help="decoder upsamplings")
    p.add_argument("--fused_depth", choices=["measured", "predicted"], default="measured",
                   help="pretrain.fused_depth: the depth map behind the fused way's attention")
    p.add_argument("--phase", choices=["pretrain", "finetune"], default="pretrain",
                   help="--model=dual: the pre-training or the fine-tuning step")
    p.add_argument("--unlabelled_batch_size", type=int, default=16,
                   help="--phase=finetune: unlabelled target images per step")
    p.add_argument("--ema_decay", type=float, default=0.999, help="--phase=finetune")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="autocast (see --amp_dtype)")
    p.add_argument("--amp_dtype", choices=["bfloat16", "float16"], default="bfloat16")
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    p.add_argument("--peak_size", type=int, default=0, help="0: 2048 on CPU, 8192 on GPU")
    p.add_argument("--output", default="")
    p.add_argument("--profile", action="store_true",
                   help="also profile --steps steps with torch.profiler: self CPU time per op "
                        "kind and the largest ops, ms per step ('profile' in the JSON)")
    args = p.parse_args()
    if args.image_size % 32:
        p.error(f"--image_size must be divisible by 32, got {args.image_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    step, _ = make_step(args, device, memory_format)

    from torch.utils.flop_counter import FlopCounterMode

    step()  # the first step allocates the optimizer state; count the flops of a steady one
    with FlopCounterMode(display=False) as counter:
        step()
    flops = float(counter.get_total_flops())
    times, loss = time_loop(step, device, args.steps, args.repeats, args.warmup)
    peak_dtype = torch.bfloat16 if args.amp and args.amp_dtype == "bfloat16" else (
        torch.float16 if args.amp else torch.float32)
    peak = matmul_peak(device, args.peak_size or (2048 if device.type == "cpu" else 8192),
                       peak_dtype)
    # Images per step as hpe_jax.experiments.benchmarking counts them (fine-tuning: both batches).
    items = args.batch_size + (args.unlabelled_batch_size if args.phase == "finetune" else 0)
    rates = [items / t for t in times]
    result = {
        "framework": f"torch {torch.__version__}", "device": str(device),
        "device_name": (torch.cuda.get_device_name() if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(), "args": vars(args),
        "images_per_s": max(rates), "images_per_s_median": statistics.median(rates),
        "images_per_s_worst": min(rates), "images_per_s_all": rates,
        "step_time_s_best": min(times), "final_loss": float(loss.detach()),
        "flops_per_step": flops, "achieved_flops_per_s": flops / min(times),
        "peak_flops_per_s": peak, "peak_dtype": str(peak_dtype).replace("torch.", ""),
        "mfu": flops / min(times) / peak,
    }
    if args.profile:
        result["profile"] = profile_steps(step, args.steps)
    text = json.dumps(result, indent=2)
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
