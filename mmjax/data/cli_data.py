"""The `mmjax data` subcommands (registered in mmjax.cli with `add_data_parser`).

  mmjax data build scenes [--num N] [--out DIR] [--name NAME] [--set field=value ...] [--overwrite]

`--num N` sets the train split to N images and the test split to max(N // 4, 1); without it the
SceneDataConfig defaults apply (10000 / 2500). `--set` then overrides any SceneDataConfig field or
SceneConfig field, e.g. `--set image_size=32 --set selected=colour,shape --set perturbed=shape
--set p_change=1.0` (so `--set num_test=...` wins over --num). The dataset lands in
`<out>/<name>/1.0.0/` and is read with `tfds.data_source(name, data_dir=out)` or `load_scenes`.
"""

from __future__ import annotations

import argparse
import sys

from mmjax.configs.common import ConfigError, parse_sets

DATASETS = ("scenes",)


def scene_config_from_args(args: argparse.Namespace):
    """The SceneDataConfig of `data build scenes` arguments (--num, then --set overrides)."""
    import dataclasses

    from mmjax.data.scene_dataset import SceneDataConfig, parse_scene_overrides

    cfg = SceneDataConfig()
    if args.num is not None:
        if args.num < 1:
            raise ConfigError(f"--num={args.num} is invalid: must be a positive integer")
        cfg = dataclasses.replace(cfg, num_train=args.num, num_test=max(args.num // 4, 1))
    return parse_scene_overrides(cfg, parse_sets(args.set or []))


def cmd_data_build(args: argparse.Namespace) -> int:
    """Render a procedural dataset and write it as a tfds (array_record) dataset."""
    from mmjax.data.scene_dataset import build_scenes
    from mmjax.data.tfds_io import DatasetError

    if args.dataset not in DATASETS:  # argparse's choices catch this first; kept for direct calls
        raise ConfigError(f"dataset={args.dataset!r} is invalid: allowed: {', '.join(DATASETS)}")
    if args.chunk < 1:
        raise ConfigError(f"--chunk={args.chunk} is invalid: must be a positive integer")
    cfg = scene_config_from_args(args)
    name = args.name or args.dataset
    print(f"mmjax data build {args.dataset}: {cfg.num_train} train + {cfg.num_test} test images at "
          f"{cfg.scene.image_size}x{cfg.scene.image_size}, selected={','.join(cfg.selected) or 'none'}, "
          f"perturbed={','.join(cfg.perturbed) or 'none'} (p_change={cfg.p_change}) -> {args.out}/{name}",
          file=sys.stderr)
    try:
        path = build_scenes(cfg, args.out, name=name, progress=not args.quiet, chunk_size=args.chunk,
                            overwrite=args.overwrite)
    except DatasetError as err:
        raise ConfigError(str(err).replace("pass overwrite=True", "pass --overwrite")) from None
    print(f"wrote {path} (read with tfds.data_source({name!r}, data_dir={str(args.out)!r}))")
    return 0


def add_data_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `data` command (with `data build`) to an argparse subparsers object; returns its parser."""
    data = sub.add_parser("data", help="build datasets on disk (tensorflow-datasets, array_record)")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    build = data_sub.add_parser("build", help="render a procedural dataset and write it with tfds",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("dataset", choices=DATASETS, help="which dataset to build")
    build.add_argument("--num", type=int, default=None,
                       help="train images (test gets max(N // 4, 1)); default: the config's 10000 / 2500")
    build.add_argument("--out", "--data_dir", dest="out", default="data",
                       help="tfds data_dir to write into (default: data)")
    build.add_argument("--name", default=None, help="dataset name (default: the dataset, e.g. scenes)")
    build.add_argument("--set", action="append", metavar="FIELD=VALUE",
                       help="override a SceneDataConfig/SceneConfig field, e.g. --set selected=colour,shape")
    build.add_argument("--chunk", type=int, default=1024, help="images rendered per jitted call")
    build.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(func=cmd_data_build)
    return data
