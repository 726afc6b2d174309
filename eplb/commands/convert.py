"""``eplb convert``: placements and statistics between this tool's and the engines' formats."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from eplb._io import emit, write_file
from eplb.commands._common import add_topology_args, non_negative_int, positive_int, resolve_topology
from eplb.errors import EplbError
from eplb.formats import (PLACEMENT_FORMATS, detect_format, dumps, get_format, load_object, parse_layers,
                          read_placement, sglang_logical_count, write_placement)

COMMAND = "convert"

#: Output formats for statistics.
STATS_FORMATS = ("loads", "sglang", "trtllm", "csv")

_EPILOG = """\
placements (--to eplb | sglang | trtllm | vllm):
  eplb place -o p.json && eplb convert p.json --to sglang --num-layers 61 -o sglang.json
  eplb convert p.json --to trtllm -o moe_load_balancer.yaml
  eplb convert p.json --to vllm -o maps.npz
  eplb convert moe_load_balancer.yaml --to eplb --preset deepseek-v3-decode -o p.json
  eplb convert sglang.json --to eplb --preset deepseek-v3-decode --layers 3-60 -o p.json
statistics (--to loads | sglang | trtllm | csv):
  eplb convert expert_statistic/ --to loads -o loads.json        (TensorRT-LLM folder)
  eplb convert dumps/ --to loads -o loads.json                   (SGLang stat .pt dumps)
  eplb convert loads.json --to sglang --num-layers 61 -o count.json   (logical_count for SGLang)
  eplb convert loads.json --to trtllm -o stats_dir/              (TensorRT-LLM statistics folder)
"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser(
        "convert",
        help="convert placements and expert-load statistics to and from SGLang, TensorRT-LLM and vLLM formats",
        description="Convert a placement (this tool's JSON, SGLang --init-expert-location JSON, TensorRT-LLM "
                    "load-balancer YAML, vLLM maps) or expert-load statistics (SGLang .pt dumps, a TensorRT-LLM "
                    "statistics folder, JSON/CSV/Parquet/NumPy loads) into another format. Engine placement "
                    "formats do not record the topology: give --preset or --nodes/--gpus-per-node/--slots-per-gpu "
                    "when reading one.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="placement or statistics file (or statistics folder)")
    p.add_argument("--to", required=True, metavar="FORMAT",
                   help=f"placements: {', '.join(PLACEMENT_FORMATS)}; statistics: {', '.join(STATS_FORMATS)}")
    p.add_argument("--from", dest="source", metavar="FORMAT", choices=PLACEMENT_FORMATS + ("stats",),
                   help="input format (default: detected from suffix and keys)")
    p.add_argument("-o", "--output", metavar="PATH", help="output file (a folder for --to trtllm statistics); "
                                                          "default stdout for text formats")
    add_topology_args(p)
    g = p.add_argument_group("layers")
    g.add_argument("--layers", metavar="IDS", help="layer ids, e.g. 3-60: the rows to keep of an SGLang map, or "
                                                   "the id of each row of a vLLM map (default: every row, ids 0..)")
    g.add_argument("--num-layers", type=positive_int, metavar="N", help="model layer count for SGLang output (default: "
                                                              "largest layer id + 1; DeepSeek-V3 has 61)")
    p.add_argument("--num-experts", type=positive_int, metavar="E", help="logical experts of an engine map (default: largest id + 1)")
    p.add_argument("--layer-updates-per-iter", type=non_negative_int, default=0, metavar="N",
                   help="TensorRT-LLM: layers re-placed online per iteration (default 0: static placement)")
    p.add_argument("--drop-shares", action="store_true",
                   help="export a placement with uneven replica shares as its slot map alone")
    p.set_defaults(func=run)


def _is_stats(path: Path) -> bool:
    if path.is_dir():
        return True
    suffix = path.suffix.lower()
    if suffix in (".npy", ".csv", ".parquet", ".pq"):
        return True
    if suffix not in (".npz", ".pt", ".json"):
        return False
    obj = load_object(path)
    if suffix == ".json":
        return isinstance(obj, list) or (
            isinstance(obj, dict) and any(k in obj for k in ("logical_count", "loads", "expert_load", "weight")))
    return not (isinstance(obj, dict) and "physical_to_logical_map" in obj)


def _topology(args):
    if args.preset or any(v is not None for v in (args.nodes, args.gpus_per_node, args.slots_per_gpu, args.slots)):
        return resolve_topology(args)
    return None


def run(args) -> int:
    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(2, f"input not found: {path}", str(path))
    stats = args.source == "stats" or (args.source is None and _is_stats(path))
    if stats:
        return _convert_stats(args, path)
    if args.to not in PLACEMENT_FORMATS:
        raise EplbError(f"{path} holds a placement; convert it --to one of {', '.join(PLACEMENT_FORMATS)}")
    fmt = args.source or detect_format(path)
    topo = _topology(args)
    placement = read_placement(path, fmt, topology=topo, layers=parse_layers(args.layers),
                               num_experts=args.num_experts)
    if fmt == "eplb" and topo is not None and topo.num_slots != placement.topology.num_slots:
        raise EplbError(f"{path} was placed on {placement.topology.describe()}; the topology given does not match")
    given = dict(num_layers=args.num_layers, layer_updates_per_iter=args.layer_updates_per_iter,
                 drop_shares=args.drop_shares)
    options = {k: v for k, v in given.items() if k in get_format(args.to).options}
    if args.output and args.output != "-":
        write_placement(placement, args.output, args.to, **options)
    else:
        emit(dumps(placement, args.to, **options), None)
    print(f"eplb convert: {fmt} placement, {placement.num_layers} layers x {placement.num_slots} slots "
          f"({placement.topology.describe()}) -> {args.to}", file=sys.stderr)
    if fmt == "sglang" and args.layers is None:
        trivial = np.arange(placement.num_slots) % placement.num_experts
        rows = [int(l) for l, r in zip(placement.layers, placement.phy2log) if np.array_equal(r, trivial)]
        if rows and len(rows) < placement.num_layers:
            shown = ", ".join(map(str, rows[:6])) + (", ..." if len(rows) > 6 else "")
            print(f"eplb convert: note: layers {shown} hold SGLang's trivial map (dense layers?); "
                  "keep only the MoE layers with --layers (DeepSeek-V3: 3-60)", file=sys.stderr)
    return 0


def _convert_stats(args, path: Path) -> int:
    from traces import read_expert_loads

    if args.to not in STATS_FORMATS:
        raise EplbError(f"{path} holds expert-load statistics; convert them --to one of {', '.join(STATS_FORMATS)} "
                        "(a placement comes from `eplb place --loads FILE`)")
    loads = read_expert_loads(path)
    if args.to == "trtllm":
        from traces.engine_stats import write_trtllm_statistics

        if not args.output or args.output == "-":
            raise EplbError("TensorRT-LLM statistics are a folder; give it with -o DIR")
        if not np.all(loads.loads == np.round(loads.loads)):
            raise EplbError("TensorRT-LLM statistics hold integer token counts; these loads are fractional")
        _write_folder_atomic(Path(args.output), lambda tmp: write_trtllm_statistics(tmp, loads.loads[None], layers=loads.layers))
    else:
        text = _STATS_TEXT[args.to](loads, args.num_layers)
        if args.output and args.output != "-":
            write_file(args.output, text + "\n")
        else:
            emit(text, None)
    print(f"eplb convert: statistics {loads.name or path}, {loads.num_layers} layers x {loads.num_experts} experts "
          f"(layers {int(loads.layers.min())}..{int(loads.layers.max())}) -> {args.to}", file=sys.stderr)
    return 0


def _loads_json(loads, num_layers) -> str:
    return json.dumps({"loads": _ints(loads.loads), "layers": loads.layers.tolist()})


def _logical_count_json(loads, num_layers) -> str:
    obj = sglang_logical_count(loads, num_layers=num_layers)
    return '{"logical_count": [\n' + ",\n".join(json.dumps(r) for r in obj["logical_count"]) + "\n]}"


def _long_csv(loads, num_layers) -> str:
    E = loads.loads.shape[1]
    lines = ["layer,expert,count"]
    vals = _ints(loads.loads)
    for i, layer in enumerate(loads.layers.tolist()):
        lines.extend(f"{layer},{e},{vals[i][e]}" for e in range(E))
    return "\n".join(lines)


#: Text statistics formats (TensorRT-LLM's are a folder), each ``f(loads, num_layers) -> text``.
_STATS_TEXT = {"loads": _loads_json, "sglang": _logical_count_json, "csv": _long_csv}


def _ints(arr: np.ndarray):
    return arr.astype(np.int64).tolist() if np.all(arr == np.round(arr)) else arr.tolist()


def _write_folder_atomic(target: Path, write) -> None:
    """Fill a new folder through a temporary sibling and a rename: no half-written folder is left."""
    import shutil
    import tempfile

    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise EplbError(f"{target} already exists and is not an empty folder; give a new folder")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(2, f"cannot write {target}: folder {parent} does not exist; create it first", str(parent))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    try:
        write(tmp)
        if target.exists():
            target.rmdir()
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
