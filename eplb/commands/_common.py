"""Arguments shared by several sub-commands."""
from __future__ import annotations

import argparse
import json
import math

from eplb.errors import EplbError
from eplb.topology import PRESETS, Topology, preset
from traces import DEFAULT_WORKLOAD, ExpertLoads, load_workload, read_expert_loads, workloads


# ------------------------------------------------------------------ argument types
# Used as ``type=`` of options: a bad value is one line on stderr and exit status 2 (see eplb.cli).
def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError("nan is not a number; give a value")
    return value


def finite(text: str) -> float:
    """A finite number."""
    value = _number(text)
    if math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not finite; give a finite number")
    return value


def positive(text: str) -> float:
    """A finite number > 0."""
    value = finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def non_negative(text: str) -> float:
    """A finite number >= 0."""
    value = finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def seed(text: str) -> int:
    """A random seed: an integer in 0..2**63-1."""
    value = _integer(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a seed must be an integer in 0..2**63-1, got {text!r}")
    return value


def json_text(obj, indent: int | None = None) -> str:
    """JSON of a command's result; a NaN or infinity (which JSON cannot carry) is an error, not output."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError:
        raise EplbError("the result holds NaN or infinity, which JSON cannot carry; check the numbers given") from None


def add_loads_args(p: argparse.ArgumentParser, default_workload: str | None = DEFAULT_WORKLOAD) -> None:
    g = p.add_argument_group("expert loads")
    g.add_argument("--loads", metavar="FILE",
                   help="expert-load statistics: SGLang .json/.pt, .npy/.npz, or long-form .csv/.parquet "
                        "(layer, expert, count)")
    g.add_argument("--workload", metavar="NAME", choices=workloads(),
                   help=f"a bundled DeepSeek-V3 workload instead of --loads (default {default_workload}); "
                        f"one of: {', '.join(workloads())}")


def resolve_loads(args, default_workload: str | None = DEFAULT_WORKLOAD) -> ExpertLoads:
    if args.loads and args.workload:
        raise EplbError("give either --loads or --workload, not both")
    if args.loads:
        return read_expert_loads(args.loads)
    return load_workload(args.workload or default_workload)


def add_topology_args(p: argparse.ArgumentParser, default_preset: str = "deepseek-v3-decode") -> None:
    g = p.add_argument_group("topology (a preset, or all of --nodes --gpus-per-node --slots-per-gpu)")
    g.add_argument("--preset", metavar="NAME", choices=sorted(PRESETS),
                   help=f"one of {', '.join(PRESETS)} (default {default_preset})")
    g.add_argument("--nodes", type=positive_int, help="number of nodes")
    g.add_argument("--gpus-per-node", type=positive_int, help="GPUs per node")
    g.add_argument("--slots-per-gpu", type=positive_int, help="expert slots per GPU")
    g.add_argument("--slots", type=positive_int, metavar="TOTAL",
                   help="physical expert slots per layer in total (experts + redundant), instead of --slots-per-gpu")
    g.add_argument("--groups", type=positive_int, help="expert groups of the model (default: the preset's, else 1)")


def resolve_topology(args, default_preset: str = "deepseek-v3-decode") -> Topology:
    if args.slots is not None:
        if args.slots_per_gpu is not None:
            raise EplbError("give either --slots or --slots-per-gpu, not both")
        if args.nodes is None or args.gpus_per_node is None:
            raise EplbError("--slots needs --nodes and --gpus-per-node")
        gpus = args.nodes * args.gpus_per_node
        if gpus <= 0 or args.slots <= 0 or args.slots % gpus:
            raise EplbError(
                f"{args.slots} slots do not divide evenly over {gpus} GPUs; give a multiple of {gpus} "
                "so every GPU holds the same number of experts"
            )
        args.slots_per_gpu = args.slots // gpus
    custom = [args.nodes, args.gpus_per_node, args.slots_per_gpu]
    if any(v is not None for v in custom):
        if args.preset:
            raise EplbError("give either --preset or --nodes/--gpus-per-node/--slots-per-gpu, not both")
        if any(v is None for v in custom):
            raise EplbError("a custom topology needs all of --nodes, --gpus-per-node and --slots-per-gpu")
        return Topology(args.nodes, args.gpus_per_node, args.slots_per_gpu, args.groups or 1)
    topo = preset(args.preset or default_preset)
    if args.groups is not None:
        topo = Topology(topo.num_nodes, topo.gpus_per_node, topo.slots_per_gpu, args.groups, topo.name)
    return topo


def loads_for_placement(args, placement, alternatives: str = "--loads FILE (or --workload NAME)") -> ExpertLoads:
    """The loads named on the command line, else the bundled workload the placement was made from;
    their layers must be the placement's."""
    if not args.loads and not args.workload:
        workload = placement.info.get("workload")
        if not workload:
            raise EplbError(f"give {alternatives} with the statistics to use")
        if workload not in workloads():
            raise EplbError(f"the placement was made from {str(workload)!r}, which is not a bundled workload; "
                            f"give {alternatives} with the statistics to use")
        args.workload = workload
    loads = resolve_loads(args, default_workload=None)
    if loads.num_experts != placement.num_experts:
        raise EplbError(
            f"the loads cover {loads.num_experts} experts but the placement places {placement.num_experts}; "
            "use statistics of the model the placement was made for"
        )
    if loads.num_layers != placement.num_layers or not (loads.layers == placement.layers).all():
        raise EplbError(
            f"loads cover layers {loads.layers.tolist()[:4]}... ({loads.num_layers}) but the placement covers "
            f"{placement.layers.tolist()[:4]}... ({placement.num_layers}); use statistics of the same layers"
        )
    return loads


# ------------------------------------------------------------------ --set KEY=VALUE
def parse_set(registry, name: str, pairs: list[str], flags: dict[str, str] | None = None,
              not_cli: set[str] | frozenset = frozenset()) -> dict:
    """Parse ``--set KEY=VALUE`` options of entry ``name`` of ``registry`` (an
    :class:`eplb._registry.Registry`): keys are checked as the Python API checks them
    (``registry.check_options``); values are read as JSON (numbers, true/false, null) or else taken
    as text, and must match the type of the default. ``flags`` maps options that have their own
    command-line flag to that flag; ``not_cli`` names options that take arrays or objects."""
    params = registry.options(name)
    flags = flags or {}
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise EplbError(f"--set expects KEY=VALUE, got {pair!r}")
        if key in flags:
            raise EplbError(f"set {key} with {flags[key]}, not --set")
        registry.check_options(name, [key])
        if key in not_cli:
            raise EplbError(f"option {key} of {name} takes arrays or objects; use the Python API")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        default = params[key].default
        kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(type(default))
        if kinds and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            raise EplbError(f"option {key} of {name} takes a {type(default).__name__} "
                            f"(default {default!r}), got {text!r}")
        out[key] = value
    return out
