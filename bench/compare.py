"""The framework against the direct query at one scale only: the quick part of ``run.py``.

    python bench/compare.py --url postgresql+psycopg2://postgres@127.0.0.1:5432/bench \\
        --items 1000000 --executors in_process

The same measurement as ``run.py``'s (interleaved rounds of the framework in fresh processes,
without Dagster, and the direct formulations, best of each; the rows checked equal), on the
same sources, without the other figures. Prints one JSON document with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path

import direct_query
from run import EXECUTORS, Options, compare_at_scale, databases_for, prepare_sources

from precompute_assets.core.settings import Settings


def parse_args() -> argparse.Namespace:
    defaults = Settings.from_env({})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL URL; SQLite files when absent")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--executors", nargs="+", default=list(EXECUTORS), choices=EXECUTORS)
    parser.add_argument("--formulations", nargs="+", default=list(direct_query.FORMULATIONS))
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-shards", type=int, default=defaults.max_shards)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--folder", type=Path, default=Path(tempfile.gettempdir()) / "pc-bench", help="work files"
    )
    return parser.parse_args()


def main() -> None:
    warnings.simplefilter("ignore")
    args = parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    options = Options(
        args.batch_size, args.max_shards, args.max_concurrent, args.repeats, str(args.folder)
    )
    databases = databases_for(args.url, args.folder, args.items)
    load_before = os.getloadavg()
    prepare_sources([databases])
    usages = {name: direct_query.FORMULATIONS[name] for name in args.formulations}
    scale = compare_at_scale(databases, options, usages, tuple(args.executors))
    correct = [d for d in scale["direct"].values() if d["same_rows_as_framework"]]
    direct = min(d["best_s"] for d in correct) if correct else None
    ratios = {
        executor: round(timed["best_s"] / direct, 3) if direct else None
        for executor, timed in scale["framework"].items()
    }
    plain = scale["framework_without_dagster"]["best_s"]
    print(
        json.dumps(
            {
                **scale,
                "direct_best_s": direct,
                "framework_over_direct": ratios,
                "without_dagster_over_direct": round(plain / direct, 3) if direct else None,
                "load_average": {
                    "before": [round(x, 2) for x in load_before],
                    "after": [round(x, 2) for x in os.getloadavg()],
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
