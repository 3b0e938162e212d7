"""`python -m mrpruner.mini train --out DIR`: train the miniature (run the same command again to
resume); `python -m mrpruner.mini card --model DIR`: measure what its card records (metrics.json)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from mrpruner.mini import Recipe
from mrpruner.mini.train import train


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mrpruner.mini", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train the miniature from scratch into --out (run again to resume)")
    run.add_argument("--out", required=True, help="folder for the checkpoint, the log and the finished model")
    for field in dataclasses.fields(Recipe):
        flag, default = f"--{field.name.replace('_', '-')}", field.default
        if isinstance(default, bool):
            run.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=f"default {default}")
        else:
            run.add_argument(flag, type=type(default), default=default, help=f"default {default}")
    run.add_argument("--until", type=int, default=None, help="stop after this step with a checkpoint (run again to go on)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    card = commands.add_parser("card", help="measure a trained miniature on the test split into DIR/metrics.json")
    card.add_argument("--model", required=True, help="the trained model's folder")
    card.add_argument("--n", type=int, default=None, help="test samples (default: the book's test split size)")
    args = parser.parse_args(argv)
    if args.command == "train":
        recipe = Recipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)})
        train(args.out, recipe, until=args.until, progress=not args.no_progress)
    else:
        from mrpruner.mini.measure import write_card_metrics

        print(write_card_metrics(Path(args.model), n=args.n).read_text())


if __name__ == "__main__":
    main()
