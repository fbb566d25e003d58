"""Are the defaults (batch 5,000, at most 4 shards) the best settings? Time the alternatives.

    python bench/sweep.py [--url URL] [--items 1000000] --batch-sizes 2500 5000 20000 \
        --max-shards 1 2 4 8 --executors in_process multiprocess --repeats 2

Every combination materialises the same space in a fresh process (``materialise.py``), round
after round so that load on the machine spreads over all of them; prints one JSON document with
the best time of each. It changes no setting: it informs the choice of defaults.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import warnings
from pathlib import Path

from run import Options, databases_for, ensure_source, materialise, progress, spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2_500, 5_000, 20_000])
    parser.add_argument("--max-shards", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--executors", nargs="+", default=["in_process", "multiprocess"])
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "pc-bench")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    args.folder.mkdir(parents=True, exist_ok=True)
    databases = databases_for(args.url, args.folder, args.items)
    ensure_source(databases)
    grid = list(itertools.product(args.executors, args.batch_sizes, args.max_shards))
    seconds: dict[tuple[str, int, int], list[float]] = {key: [] for key in grid}
    for round_number in range(args.repeats):
        for executor, batch_size, max_shards in grid:
            progress(
                f"round {round_number + 1}: {executor}, batch {batch_size}, {max_shards} shards"
            )
            options = Options(batch_size, max_shards, args.max_concurrent, 1, str(args.folder))
            run = materialise(databases, executor, options)
            seconds[(executor, batch_size, max_shards)].append(run["seconds"])
    results = [
        {"executor": e, "batch_size": b, "max_shards": m, **spread(seconds[(e, b, m)])}
        for e, b, m in grid
    ]
    print(json.dumps(sorted(results, key=lambda r: (r["executor"], r["best_s"])), indent=2))


if __name__ == "__main__":
    main()
