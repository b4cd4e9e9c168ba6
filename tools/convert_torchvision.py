r"""Converts a downloaded torchvision ResNet checkpoint to the project's encoder weights.

    python -m tools.convert_torchvision --input resnet101-cd907fc2.pth --depth 101 \
        --output resnet101_imagenet.npz

No torch needed: the `.pth` (torch >= 1.6 zip format) is read with numpy
(`hpe_jax.models.convert.read_torch_file`). The output holds one encoder's float32 'params/...'
and 'batch_stats/...' (`convert.save_converted`); point `config.model.init_from` at it (or at
the `.pth` itself) and `convert.load_pretrained_encoders` fills both encoders of a
`DualModalityNet`. The classifier (`fc`) is dropped. RGB inputs must then be normalised with
`convert.IMAGENET_MEAN` / `IMAGENET_STD`.
"""

from __future__ import annotations

from hpe_jax.runtime import cli


def main(argv: list[str] | None = None) -> None:
    parser = cli.argument_parser("convert_torchvision", __doc__)
    parser.add_argument("--input", required=True, help="torchvision state dict (.pth or .npz)")
    parser.add_argument("--depth", type=int, required=True, choices=(18, 34, 50, 101))
    parser.add_argument("--output", required=True, help="converted .npz to write")
    args = parser.parse_args(argv)
    cli.run_plain(lambda: _convert(args), "convert_torchvision", args.verbose)


def _convert(args) -> None:
    from hpe_jax.models.convert import convert_file  # after parsing: JAX

    summary = convert_file(args.input, args.output, args.depth)
    print(f"wrote {args.output}: ResNet-{summary['depth']} width {summary['width']:g}, "
          f"{summary['params']:,} parameters (no classifier), "
          f"{summary['batch_stats']:,} BatchNorm statistics")


if __name__ == "__main__":
    main()
