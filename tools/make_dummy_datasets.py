"""Writes the tiny dummy datasets the real-dataset builders are tested on, in the official layouts.

    .venv/bin/python -m tools.make_dummy_datasets [--out hpe_jax/data/builders/dummy_data]

One folder per builder (rhd, stb, freihand, h3d, hand_folder, dexycb, ho3d). Each holds a handful of
samples whose files follow the official releases as each builder's docstring lists them (names,
containers, units, joint orders,
depth encodings), with tiny images (32x32; STB keeps its 640x480 because its intrinsics are fixed).
The hands are the kinematic template hand placed in front of the camera, so 3D and 2D labels are
consistent: uv = project(xyz, K). Deterministic (fixed seed): rerunning reproduces the same data
(only the timestamps in the .mat headers change).
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import scipy.io
import yaml
from PIL import Image
from scipy.spatial.transform import Rotation

from hpe_jax.hand import kinematics
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, ROOT
from hpe_jax.runtime import cli

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "hpe_jax" / "data" / "builders" / "dummy_data"
SIZE = 32  # Width and height of the tiny images.


# ----------------------------------------------------------------------------------------------
# Geometry and image helpers.


def intrinsics(width: int = SIZE, height: int = SIZE, f: float = 30.0) -> np.ndarray:
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f * 1.02, (height - 1) / 2], [0, 0, 1.0]])


def hand_in_view(rng: np.random.Generator, K: np.ndarray, width: int, height: int,
                 side: str = "right", fill: float = 0.5) -> np.ndarray:
    """(21, 3) mm canonical-order hand in front of the camera, spanning `fill` of the image."""
    pose = np.asarray(kinematics.template_pose(), np.float64)
    rot = Rotation.from_euler("xyz", rng.uniform(-0.4, 0.4, 3) + [np.pi, 0.0, 0.0]).as_matrix()
    pose = (pose - pose[ROOT]) @ rot.T
    extent = np.ptp(pose[:, :2], axis=0).max()
    z = K[0, 0] * extent / (fill * min(width, height))
    centre = np.array([width / 2 + rng.uniform(-2, 2), height / 2 + rng.uniform(-2, 2), 1.0])
    root = np.linalg.solve(K, centre) * z
    if side == "left":
        pose = pose * np.array([-1.0, 1.0, 1.0])
    return pose + root


def project(xyz: np.ndarray, K: np.ndarray) -> np.ndarray:
    p = xyz @ K.T
    return p[:, :2] / p[:, 2:]


def to_source(canonical: np.ndarray, dataset: str) -> np.ndarray:
    """Inverse of skeleton.to_canonical: canonical order -> the dataset's own order."""
    perm = np.asarray(DATASET_TO_CANONICAL[dataset])
    source = np.empty_like(canonical)
    source[perm] = canonical
    return source


def picture(rng: np.random.Generator, width: int = SIZE, height: int = SIZE) -> np.ndarray:
    """(H, W, 3) uint8 left-right asymmetric image (a horizontal ramp plus noise)."""
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 1))
    noise = rng.integers(0, 60, (height, width, 3))
    img = np.concatenate([ramp, ramp[:, ::-1] * 0.5, np.zeros_like(ramp)], axis=-1) + noise
    return np.clip(img, 0, 255).astype(np.uint8)


def smooth_picture(width: int, height: int) -> np.ndarray:
    """A large image that compresses to a few kB (rows identical): for official-size images."""
    ramp = np.linspace(0, 255, width).astype(np.uint8)
    row = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], -1)
    return np.broadcast_to(row, (height, width, 3)).copy()


def save_image(path: Path, img: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, **kwargs)


def save_jpg(path: Path, img: np.ndarray) -> None:
    save_image(path, img, quality=95)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


# ----------------------------------------------------------------------------------------------
# One writer per dataset.


def make_rhd(out: Path, rng: np.random.Generator) -> None:
    """Training: frames 0 (right), 1 (left), 2 (right) dominant; evaluation: 0 (left), 1 (right)."""
    root = out / "RHD_published_v2"
    splits = (("training", ["right", "left", "right"]), ("evaluation", ["left", "right"]))
    for split, sides in splits:
        annos = {}
        for i, side in enumerate(sides):
            K = intrinsics(f=28.0 + i)
            hands = {s: hand_in_view(rng, K, SIZE, SIZE, s) for s in ("left", "right")}
            xyz = np.concatenate([to_source(hands["left"], "rhd"),
                                  to_source(hands["right"], "rhd")])
            uv = project(xyz, K)
            vis = np.ones((42, 1))
            vis[[3, 30]] = 0.0  # A few occluded joints.
            annos[i] = {"xyz": (xyz / 1000.0).astype(np.float32),
                        "uv_vis": np.concatenate([uv, vis], 1).astype(np.float32),
                        "K": K.astype(np.float32)}
            # Mask: the dominant hand covers a 5x5 patch per joint, the other hand 4 pixels.
            labels = np.zeros((SIZE, SIZE), np.uint8)
            labels[:, :3] = 1  # The person.
            other = "left" if side == "right" else "right"
            first = {"left": 2, "right": 18}
            for j, (u, v) in enumerate(project(hands[side], K)):
                u, v = int(np.clip(round(u), 2, SIZE - 3)), int(np.clip(round(v), 2, SIZE - 3))
                labels[v - 2:v + 3, u - 2:u + 3] = first[side] + j % 16
            labels[SIZE - 2:, SIZE - 2:] = first[other] + 15
            depth_m = rng.uniform(1.0, 4.9, (SIZE, SIZE))
            depth_m[labels >= 2] = hands[side][ROOT, 2] / 1000.0
            code = np.round(depth_m / 5.0 * 65535).astype(np.int64)
            depth_png = np.stack([code >> 8, code & 255, np.zeros_like(code)], -1).astype(np.uint8)
            name = f"{i:05d}.png"
            save_image(root / split / "color" / name, picture(rng))
            save_image(root / split / "depth" / name, depth_png)
            save_image(root / split / "mask" / name, labels)
        write_pickle(root / split / f"anno_{split}.pickle", annos)


# STB's extrinsics (README): X_color = R^T (X_depth - T).
STB_R = Rotation.from_rotvec([0.00531, -0.01196, 0.00301]).as_matrix()
STB_T = np.array([-24.0381, -0.4563, -1.2326])
STB_SK_COLOR_K = np.array([[607.92271, 0, 314.78337], [0, 607.88192, 236.42484], [0, 0, 1]])


def make_stb(out: Path, rng: np.random.Generator) -> None:
    """All 12 sequences; B1Counting/B1Random (test) with 2 frames, the others with 1 frame."""
    for b in range(1, 7):
        for kind in ("Counting", "Random"):
            seq = f"B{b}{kind}"
            frames = 2 if b == 1 else 1
            para = np.zeros((3, 21, frames))
            for i in range(frames):
                xyz_color = hand_in_view(rng, STB_SK_COLOR_K, 640, 480, "left", fill=0.3)
                # Joint 0 of STB is the palm centre, not the wrist: halfway wrist -> middle MCP.
                xyz_color[0] = 0.5 * (xyz_color[0] + xyz_color[ROOT])
                xyz_depth = xyz_color @ STB_R.T + STB_T
                para[:, :, i] = to_source(xyz_depth, "stb").T
                save_image(out / "images" / seq / f"SK_color_{i}.png", smooth_picture(640, 480))
            (out / "labels").mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(str(out / "labels" / f"{seq}_SK.mat"), {"handPara": para})


def make_freihand(out: Path, rng: np.random.Generator) -> None:
    """4 training poses x 4 colour versions and 2 evaluation samples with their xyz."""
    for split, n, versions in (("training", 4, 4), ("evaluation", 2, 1)):
        Ks, xyzs = [], []
        for i in range(n):
            K = intrinsics(f=40.0)
            xyz = hand_in_view(rng, K, SIZE, SIZE)
            Ks.append(K.tolist())
            xyzs.append((xyz / 1000.0).tolist())
            for k in range(versions):
                save_jpg(out / split / "rgb" / f"{i + n * k:08d}.jpg", picture(rng))
            if split == "training":
                save_jpg(out / split / "mask" / f"{i:08d}.jpg",
                         np.zeros((SIZE, SIZE, 3), np.uint8))
        write_json(out / f"{split}_K.json", Ks)
        write_json(out / f"{split}_xyz.json", xyzs)
        write_json(out / f"{split}_scale.json",
                   [float(np.linalg.norm(np.subtract(x[9], x[10]))) for x in xyzs])


def make_h3d(out: Path, rng: np.random.Generator) -> None:
    """10 one-handed samples (TLlib split: 2 test, 8 train) and 2 with objects (dropped)."""
    root = out / "H3D_crop"
    samples = []
    for i in range(12):
        K = intrinsics(f=35.0)
        xyz = hand_in_view(rng, K, SIZE, SIZE)
        name = f"part{1 + i % 5}/{i:06d}.jpg"
        save_jpg(root / name, picture(rng))
        samples.append({"name": name, "keypoint3d": xyz.tolist(),
                        "keypoint2d": project(xyz, K).tolist(),
                        "intrinsic_matrix": K.tolist(), "without_object": int(i < 10)})
    write_json(root / "annotation.json", samples)


def make_hand_folder(out: Path, rng: np.random.Generator) -> None:
    """train.json in MVHand's joint order (one left hand), test.json canonical, mm."""
    for split, order, sides in (("train", "mvhand", ["right", "left", "right"]),
                                ("test", "canonical", ["right", "right"])):
        samples = []
        for i, side in enumerate(sides):
            K = intrinsics(f=32.0)
            xyz = hand_in_view(rng, K, SIZE, SIZE, side)
            image = f"images/{split}_{i:03d}.jpg"
            save_jpg(out / image, picture(rng))
            src = xyz if order == "canonical" else to_source(xyz, order)
            sample = {"id": f"{split}/{i}", "image": image, "K": K.tolist(),
                      "keypoints_3d": src.tolist(), "hand_side": side}
            if i == 0:
                sample["keypoints_2d"] = project(src, K).tolist()
                sample["visibility"] = [True] * 20 + [False]
            samples.append(sample)
        write_json(out / f"{split}.json", {"joint_order": order, "units": "mm",
                                           "samples": samples})


DEXYCB_SUBJECTS = [
    "20200709-subject-01", "20200813-subject-02", "20200820-subject-03", "20200903-subject-04",
    "20200908-subject-05", "20200918-subject-06", "20200928-subject-07", "20201002-subject-08",
    "20201015-subject-09", "20201022-subject-10",
]
DEXYCB_SERIAL = "836212060125"


def make_dexycb(out: Path, rng: np.random.Generator) -> None:
    """Subjects 1 and 3 with 5 sequences (the 5th is val/test in s0), the others with 1."""
    K = intrinsics(f=30.0)
    calib = {"color": {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "ppx": float(K[0, 2]),
                       "ppy": float(K[1, 2])}}
    (out / "calibration" / "intrinsics").mkdir(parents=True, exist_ok=True)
    (out / "calibration" / "intrinsics" / f"{DEXYCB_SERIAL}_640x480.yml").write_text(
        yaml.safe_dump(calib))
    for s, subject in enumerate(DEXYCB_SUBJECTS):
        n_seq = 5 if s in (0, 2) else 1
        for q in range(n_seq):
            seq_dir = out / subject / f"2020{s:02d}{q:02d}_1200{q:02d}"
            frames = 2 if q in (0, 4) and s in (0, 2) else 1
            side = "left" if (s == 2 and q == 4) else "right"
            meta = {"serials": [DEXYCB_SERIAL], "num_frames": frames, "mano_sides": [side],
                    "ycb_ids": [1], "ycb_grasp_ind": 0, "mano_calib": ["dummy"]}
            seq_dir.mkdir(parents=True, exist_ok=True)
            (seq_dir / "meta.yml").write_text(yaml.safe_dump(meta))
            cam = seq_dir / DEXYCB_SERIAL
            for f in range(frames):
                xyz = hand_in_view(rng, K, SIZE, SIZE, side)
                joint_3d = (xyz / 1000.0)[None].astype(np.float32)
                joint_2d = project(xyz, K)[None].astype(np.float32)
                if s == 0 and q == 0 and f == 1:  # No hand in this frame: the toolkit's -1s.
                    joint_3d[:] = -1.0
                    joint_2d[:] = -1.0
                save_jpg(cam / f"color_{f:06d}.jpg", picture(rng))
                depth = rng.integers(300, 1500, (SIZE, SIZE)).astype(np.uint16)
                save_image(cam / f"aligned_depth_to_color_{f:06d}.png", depth)
                buf = io.BytesIO()
                np.savez_compressed(buf, seg=np.zeros((SIZE, SIZE), np.uint8),
                                    joint_3d=joint_3d, joint_2d=joint_2d,
                                    pose_m=np.zeros((1, 51), np.float32),
                                    pose_y=np.zeros((1, 3, 4), np.float32))
                (cam / f"labels_{f:06d}.npz").write_bytes(buf.getvalue())


HO3D_DEPTH_SCALE_M = 0.00012498664727900177


def make_ho3d(out: Path, rng: np.random.Generator) -> None:
    """train: 3 frames of two sequences (v2: png rgb); evaluation: 1 frame (root only)."""
    frames = [("ABF10", "0000"), ("ABF10", "0001"), ("MC1", "0000")]
    for seq, fid in frames:
        K = intrinsics(f=30.0)
        xyz = hand_in_view(rng, K, SIZE, SIZE)
        d = out / "train" / seq
        save_image(d / "rgb" / f"{fid}.png", picture(rng))
        depth_m = rng.uniform(0.3, 1.5, (SIZE, SIZE))
        code = np.round(depth_m / HO3D_DEPTH_SCALE_M).astype(np.int64)
        save_image(d / "depth" / f"{fid}.png",
                   np.stack([code & 255, code >> 8, np.zeros_like(code)], -1).astype(np.uint8))
        gl = to_source(xyz, "ho3d") / 1000.0 * np.array([1.0, -1.0, -1.0])  # OpenCV -> OpenGL.
        write_pickle(d / "meta" / f"{fid}.pkl", {
            "handJoints3D": gl.astype(np.float32), "camMat": K.astype(np.float32),
            "handPose": np.zeros(48, np.float32), "handTrans": gl[0].astype(np.float32),
            "handBeta": np.zeros(10, np.float32), "objName": "003_cracker_box"})
    (out / "train.txt").write_text("".join(f"{s}/{f}\n" for s, f in frames))
    ev = out / "evaluation" / "SM1"
    save_image(ev / "rgb" / "0000.png", picture(rng))
    write_pickle(ev / "meta" / "0000.pkl", {"handJoints3D": np.zeros(3, np.float32),
                                            "camMat": intrinsics().astype(np.float32),
                                            "handBoundingBox": [4, 4, 28, 28]})
    (out / "evaluation.txt").write_text("SM1/0000\n")


MAKERS = {
    "rhd": make_rhd, "stb": make_stb, "freihand": make_freihand, "h3d": make_h3d,
    "hand_folder": make_hand_folder, "dexycb": make_dexycb, "ho3d": make_ho3d,
}


def main() -> None:
    parser = cli.argument_parser("make_dummy_datasets", __doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", nargs="*", choices=sorted(MAKERS), default=sorted(MAKERS))
    args = parser.parse_args()
    cli.run_plain(lambda: _make(args), "make_dummy_datasets", args.verbose)


def _make(args: argparse.Namespace) -> None:
    for name in args.only:
        target = args.out / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        MAKERS[name](target, np.random.default_rng(sorted(MAKERS).index(name)))
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        print(f"{name}: {target} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
