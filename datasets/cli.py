"""`worldloom dataset inspect|validate|export|merge|split`.

    worldloom dataset inspect data/run1 [--json] [--episodes]
    worldloom dataset validate data/run1 [--skip-frames]
    worldloom dataset repair data/run1      # drop damaged/missing shards' episodes; capture re-records them
    worldloom dataset export data/run1 --episode ep-000 [--start 0 --stop 64] [--captions] --out ep.mp4|ep.gif|sheet.png
    worldloom dataset merge data/a data/b --out data/ab
    worldloom dataset split data/ab --out data/splits --fractions train=0.9 val=0.1 [--seed 0]
    worldloom dataset captions data/run1 --out data/run1-captions.jsonl [--clip-seconds 2]
    worldloom dataset ingest --format vpt|minerl|video --data recordings/ --out data/vpt [--resolution 128] [--num-workers 4]
"""

from __future__ import annotations

import argparse
import sys

from worldloom.config import finite_float
from worldloom.errors import UserError
from worldloom.io import check_parents, json_text
from worldloom.paths import child, redact_uri
from worldloom.progress import counted

EPISODE_FIELDS = ("episode_id", "num_steps", "split", "env", "player", "label_source")


def cmd_inspect(args: argparse.Namespace) -> int:
    from .reader import Dataset
    from .summary import format_summary, summarize

    summary = summarize(args.path)
    if args.episodes:  # the ids other commands take (`pretrain rollout --episode`, `dataset export --episode`)
        table = Dataset(args.path).episodes
        summary["episode_list"] = [{k: row.get(k) for k in EPISODE_FIELDS} for row in
                                   table.select([c for c in EPISODE_FIELDS if c in table.column_names]).to_pylist()]
    if args.json:
        print(json_text(summary, indent=2))
    else:
        print(format_summary(summary))
        for row in summary.get("episode_list", []):
            print("  " + "  ".join(str(row[k]) for k in EPISODE_FIELDS if row.get(k) is not None))
    return 0 if summary["complete"] else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from .validate import format_problems, validate

    problems = validate(args.path, check_frames=not args.skip_frames)
    for line in format_problems(redact_uri(args.path), problems):
        print(line, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found; nothing was changed", file=sys.stderr)
        return 1
    print(f"{redact_uri(args.path)}: valid")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from .repair import repair

    where = redact_uri(args.path)
    result = repair(args.path)
    if not result["shards"]:
        print(f"{where}: every shard matches dataset.json; nothing to repair")
        return 0
    for rel, problem in result["shards"].items():
        aside = f"; moved to {result['moved'][rel]}" if rel in result["moved"] else ""
        print(f"{child(where, rel)}: {problem}; dropped from the dataset{aside}")
    print(f"dropped {len(result['episodes'])} episode(s): {', '.join(result['episodes'])}")
    print(result["hint"])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import check_episode, contact_sheet, export_clip
    from .reader import Dataset

    ds = Dataset(args.path)
    if args.out.lower().endswith(".png"):
        check_parents(args.out)  # before the frames are read and drawn
        if args.episode is not None:
            check_episode(ds, args.episode)
        out = contact_sheet(ds, args.out, episode_id=args.episode, num=32 if args.num is None else args.num,
                            scale=args.scale, say_fewer=args.num is not None)
    else:
        if args.episode is None:
            raise UserError("--episode is needed to export a video (or give --out NAME.png for a contact sheet)")
        out = export_clip(ds, args.episode, args.out, args.start, args.stop, overlay=not args.no_overlay, scale=args.scale,
                          captions=args.captions)
    print(f"wrote {out}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .edit import merge

    manifest = merge(args.sources, args.out)
    print(f"{redact_uri(args.out)}: {counted(manifest['num_episodes'], 'episode')}, "
          f"{counted(manifest['num_frames'], 'frame')}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from .edit import parse_fractions, split

    result = split(args.path, args.out, parse_fractions(args.fractions), seed=args.seed)
    for name, ids in result.items():
        print(f"{child(redact_uri(args.out), name)}: {counted(len(ids), 'episode')}")
    return 0


def cmd_captions(args: argparse.Namespace) -> int:
    from .captions import caption_dataset

    result = caption_dataset(args.path, args.out, clip_seconds=args.clip_seconds)
    print(f"{redact_uri(args.out)}: {counted(result['clips'], 'clip caption')} ({result['clip_frames']} frames each), "
          f"{counted(result['episodes'], 'episode')}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from worldloom.config import dataclass_from_args
    from worldloom.progress import job_summary

    from .ingest import IngestConfig, ingest

    summary = ingest(dataclass_from_args(IngestConfig, args))
    print(job_summary("dataset ingest", "ingested", summary | {"out": redact_uri(summary["out"])},
                      how=f"from {summary['format']} recordings"))
    return 1 if summary["failed"] else 0


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    parser = subparsers.add_parser(name, help=help_text, description="Inspect, check, view and reshape WorldLoom datasets.")
    sub = parser.add_subparsers(dest="dataset_command", metavar="COMMAND", required=True)

    p = sub.add_parser("inspect", help="episodes, frames, hours, size, action histograms, labels")
    p.add_argument("path", help="dataset directory or URI")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.add_argument("--episodes", action="store_true",
                   help="also list every episode: id, steps, split, env, player, label source")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("validate", help="check everything; print every problem; exit 1 if any (never writes)")
    p.add_argument("path", help="dataset directory or URI")
    p.add_argument("--skip-frames", action="store_true", help="do not decode frames (faster)")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("repair", help="drop the episodes of missing or damaged shards (moved to damaged/) so that "
                       "re-running the capture command records them again")
    p.add_argument("path", help="dataset directory or URI")
    p.set_defaults(handler=cmd_repair)

    p = sub.add_parser("export", help="an episode or clip to .mp4/.gif with the action drawn, or a contact-sheet .png")
    p.add_argument("path", help="dataset directory or URI")
    p.add_argument("--episode", help="episode id (a .png without it: one frame of each episode)")
    p.add_argument("--start", type=int, default=0, help="first step (default: 0)")
    p.add_argument("--stop", type=int, default=None, help="one past the last step (default: the end)")
    p.add_argument("--out", required=True, help="output file: .mp4, .gif or .png; or an existing folder (the video is then EPISODE.mp4 in it)")
    p.add_argument("--no-overlay", action="store_true",
                   help="frames only, no action drawn; use it (with --scale 1) for footage meant for `dataset ingest` "
                        "or `idm label`, which would feed the overlay to the IDM")
    p.add_argument("--captions", action="store_true", help="draw the engine-exact caption of each 2 s clip above the frames")
    p.add_argument("--scale", type=int, default=None,
                   help="whole upscale factor, pixels per stored pixel (default: a video's frames get a longer side of "
                        "512 px, x8 for 64x64 frames, larger ones such as 1080p downscaled to it; a contact sheet's "
                        "tiles 128 px; at most 4096 px a side, x64 for 64x64 frames)")
    p.add_argument("--num", type=int, default=None, help="frames in a contact sheet, 1 to 4096 (default: 32, or as many "
                   "as there are; fewer than asked are said)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("merge", help="merge datasets of the same frame spec (copies shards, no re-encoding)")
    p.add_argument("sources", nargs="+", help="source datasets")
    p.add_argument("--out", required=True, help="output dataset (new, or one of the same spec)")
    p.set_defaults(handler=cmd_merge)

    p = sub.add_parser("split", help="split by episode into <out>/<name> datasets (deterministic, no re-encoding)")
    p.add_argument("path", help="source dataset")
    p.add_argument("--out", required=True, help="directory for the split datasets")
    p.add_argument("--fractions", nargs="+", default=["train=0.9", "val=0.1"], help="name=fraction pairs (default: train=0.9 val=0.1)")
    p.add_argument("--seed", type=int, default=0, help="hash seed of the assignment (default: 0)")
    p.set_defaults(handler=cmd_split)

    p = sub.add_parser("captions", help="engine-exact captions per clip from the state columns, as JSON lines (docs/captions.md)")
    p.add_argument("path", help="dataset directory or URI")
    p.add_argument("--out", required=True, help="output .jsonl file (one object per clip; its folder is made if missing)")
    p.add_argument("--clip-seconds", type=finite_float, default=2.0, help="clip length in seconds (default: 2)")
    p.set_defaults(handler=cmd_captions)

    from worldloom.config import add_dataclass_args

    from .ingest import IngestConfig

    p = sub.add_parser("ingest", help="VPT recordings, MineRL v0 trajectories or any video into a dataset (docs/ingest.md)")
    add_dataclass_args(p, IngestConfig)
    p.set_defaults(handler=cmd_ingest)
