"""``eplb sweep``: placement quality over presets x EP sizes x redundancy x workloads x methods."""
from __future__ import annotations

import sys

from eplb.errors import EplbError

COMMAND = "sweep"


def _list(text: str | None, cast=str):
    if text is None:
        return None
    if text == "all":
        return "all"
    try:
        return [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EplbError(f"cannot read the list {text!r}; give comma-separated values like 0,32,64") from None


def register(sub) -> None:
    from eplb.topology import PRESETS

    p = sub.add_parser(
        "sweep",
        help="placement quality over presets x EP sizes x redundancy x workloads x methods (Parquet out)",
        description="Place and evaluate every combination, in local processes or on a Dask cluster, and write "
                    "one row per combination (balance figures, gap to the bound, time) to Parquet, CSV or JSON. "
                    "Combinations whose slots do not split evenly over the GPUs are skipped and listed.",
    )
    p.add_argument("--presets", default="all", metavar="LIST", help=f"comma-separated presets or 'all' ({', '.join(PRESETS)})")
    p.add_argument("--ep-sizes", metavar="LIST", help="GPU counts of the EP unit, e.g. 32,64,144 (default: each preset's)")
    p.add_argument("--redundancy", default="32", metavar="LIST", help="redundant slots per layer, e.g. 0,32,64 (default 32)")
    p.add_argument("--workloads", default="all", metavar="LIST", help="bundled workloads or statistics files, or 'all' (default)")
    p.add_argument("--methods", default="deepseek", metavar="LIST", help="placement methods or 'all' (default deepseek)")
    p.add_argument("--layers", type=int, metavar="N", help="only the first N MoE layers (quicker)")
    p.add_argument("--time-limit", type=float, metavar="SECONDS", help="time budget per placement for methods that search")
    p.add_argument("--seed", type=int, help="seed for randomized methods")
    run = p.add_argument_group("where to run")
    run.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: CPU count; 1: in-process)")
    run.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address (tcp://host:8786) to run on a cluster")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="results as Parquet (.parquet), CSV (.csv) or JSON (.json), by suffix; default: a table on stdout")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    from eplb.sweep import grid, results_suffix, run_sweep, write_results

    if args.workers is not None and args.scheduler:
        raise EplbError("give either --workers (local processes) or --scheduler (a Dask cluster), not both")
    if args.workers is not None and args.workers < 1:
        raise EplbError(f"--workers must be at least 1, got {args.workers}")
    if args.layers is not None and args.layers < 1:
        raise EplbError(f"--layers must be at least 1, got {args.layers}")
    if args.output == "-":
        args.output = None  # "-": the table on stdout, as without -o
    if args.output:
        results_suffix(args.output)  # an unknown format is refused before the sweep runs
    configs, skipped = grid(
        _list(args.presets), _list(args.redundancy, int), _list(args.workloads), _list(args.methods),
        ep_sizes=_list(args.ep_sizes, int) if args.ep_sizes else None, num_layers=args.layers,
        time_limit=args.time_limit, seed=args.seed,
    )
    seen = {}
    for p, ep, r, w, reason in skipped:
        seen.setdefault((p, ep, r), reason)
    for (p, ep, r), reason in list(seen.items())[:5]:
        print(f"eplb sweep: skipped {p} ep={ep or 'preset'} redundancy={r}: {reason}", file=sys.stderr)
    if len(seen) > 5:
        print(f"eplb sweep: skipped {len(seen) - 5} more topologies", file=sys.stderr)
    if not configs:
        raise EplbError("no combination makes a valid topology; choose redundancy so experts + redundancy is a multiple of the GPU count")
    where = f"Dask cluster {args.scheduler}" if args.scheduler else f"{args.workers or 'all'} local process(es)"
    print(f"eplb sweep: {len(configs)} configurations on {where}", file=sys.stderr)
    df = run_sweep(configs, workers=args.workers, scheduler=args.scheduler, progress=args.progress)
    errors = int(df["error"].notna().sum())
    if errors == len(df):
        first = str(df["error"].iloc[0]).splitlines()[0]
        raise EplbError(f"all {len(df)} configurations failed, the first with {first}; fix the arguments")
    if args.output:
        write_results(df, args.output)
        print(f"eplb sweep: wrote {len(df)} rows to {args.output}" + (f" ({errors} with errors)" if errors else ""),
              file=sys.stderr)
    else:
        cols = ["preset", "ep_size", "redundancy", "workload", "method", "imbalance_mean", "gap_mean", "time_s", "error"]
        with_err = df[cols] if errors else df[cols[:-1]]
        print(with_err.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    ok = df[df["error"].isna()]
    if len(ok):
        table = ok.groupby("method")[["imbalance_mean", "gap_mean", "time_s"]].mean()
        print("mean over configurations:\n" + table.to_string(float_format=lambda x: f"{x:.4f}"), file=sys.stderr)
    return 0
