"""`worldloom idm`: train, evaluate and run the inverse dynamics model.

    worldloom idm train --data data/voxel --preset tiny --out runs/idm --minutes 15 [--model.height 128 --model.width 128]
    worldloom idm eval --model runs/idm --data data/heldout [--truth data/truth] [--out DIR]
    worldloom idm label --model runs/idm --data videos/ --out data/pseudo [--num-workers 2]
    worldloom idm label --model vpt:models/4x_idm.weights --data videos/ --out data/labeled   # OpenAI's IDM
    worldloom idm scaling --data data/voxel --eval-data data/heldout --hours 0.05 0.1 0.2 --out runs/scaling
"""

from __future__ import annotations

import argparse
import sys

from worldloom.config import add_dataclass_args, dataclass_from_args
from worldloom.progress import counted, figure, job_summary


def run_train(args: argparse.Namespace) -> int:
    from worldloom.idm.train import TrainConfig, main

    run_dir = main(dataclass_from_args(TrainConfig, args))
    print(f"idm train: checkpoint, metrics.csv and curves.png in {run_dir}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from worldloom.idm.evaluate import evaluate, markdown_table

    report = evaluate(args.model, args.data, truth=args.truth, out=args.out)
    print(markdown_table(report))
    print(f"idm eval: eval.json, eval.md and confusion.png in {report['out']}", file=sys.stderr)
    return 0


def run_label(args: argparse.Namespace) -> int:
    from worldloom.idm.label import LabelConfig, label

    summary = label(dataclass_from_args(LabelConfig, args))
    print(job_summary("idm label", "labeled", summary, how=f"by {summary['label_model']}"))
    return 1 if summary["failed"] else 0


def run_scaling(args: argparse.Namespace) -> int:
    from worldloom.idm.scaling import ScalingConfig, main

    cfg = dataclass_from_args(ScalingConfig, args)
    rows = main(cfg)
    print("| hours | button macro F1 | always no-op F1 | camera R² pitch | camera R² yaw |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['hours']:g} | {figure(r['button_macro_f1'])} | {figure(r['noop_button_macro_f1'])} | "
              f"{figure(r['camera_r2_pitch'])} | {figure(r['camera_r2_yaw'])} |")
    print(f"idm scaling: {counted(len(rows), 'run')}, scaling.csv and scaling.png in {cfg.out}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Add `worldloom idm {train,eval,label,scaling}`."""
    from worldloom.idm.label import LabelConfig
    from worldloom.idm.scaling import ScalingConfig
    from worldloom.idm.train import TrainConfig

    parser = subparsers.add_parser(name, help=help_text, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="idm_command", metavar="COMMAND")
    p = sub.add_parser("train", help="train an IDM on labeled episodes (resumes an existing --out)")
    add_dataclass_args(p, TrainConfig, deprecated={"--steps": "max_steps", "--ckpt-every": "checkpoint_every"})
    p.set_defaults(handler=run_train)
    p = sub.add_parser("eval", help="score a trained IDM beside the no-op and persistence baselines")
    p.add_argument("--model", required=True, help="IDM run directory, or vpt:PATH/4x_idm.weights (OpenAI's released IDM)")
    p.add_argument("--data", required=True, nargs="+", help="dataset(s) to predict on")
    p.add_argument("--truth", nargs="+", default=None, help="dataset(s) with the true actions, matched by episode_id "
                                                            "(default: the labels of --data)")
    p.add_argument("--out", default=None, help="report directory (default: RUN/eval-<data name>)")
    p.set_defaults(handler=run_eval)
    p = sub.add_parser("label", help="pseudo-label a dataset, a video or a folder of videos")
    add_dataclass_args(p, LabelConfig, deprecated={"--input": "data"})
    p.set_defaults(handler=run_label)
    p = sub.add_parser("scaling", help="accuracy and camera R² against hours of labeled play (a PNG)")
    add_dataclass_args(p, ScalingConfig, deprecated={"--steps": "max_steps"})
    p.set_defaults(handler=run_scaling)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
