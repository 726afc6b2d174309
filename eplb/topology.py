"""Hardware topology of one expert-parallel unit: nodes x GPUs per node x expert slots per GPU,
plus the model's expert groups (group-limited routing)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from eplb.errors import EplbError

__all__ = ["Topology", "PRESETS", "preset", "MAX_SLOTS"]

#: Physical expert slots per layer accepted in one topology: 50 times DeepSeek-V3's largest unit
#: (320), so no real deployment reaches it, while a mistyped size is refused before it allocates.
MAX_SLOTS = 16384


@dataclass(frozen=True)
class Topology:
    """An EP unit. Physical slot ``p`` lives on GPU ``p // slots_per_gpu``, which lives on node
    ``gpu // gpus_per_node`` (GPU-major, as in DeepSeek's EPLB and every engine that copies it).

    num_groups: expert groups of the model (experts ``[g*E/G, (g+1)*E/G)`` form group ``g``).
    """

    num_nodes: int
    gpus_per_node: int
    slots_per_gpu: int
    num_groups: int = 1
    name: str = ""

    def __post_init__(self):
        for field in ("num_nodes", "gpus_per_node", "slots_per_gpu", "num_groups"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise EplbError(f"topology {field} must be a positive integer, got {value!r}")
        if self.num_slots > MAX_SLOTS:
            raise EplbError(
                f"the topology has {self.num_slots} slots per layer ({self.num_nodes} nodes x {self.gpus_per_node} "
                f"GPUs x {self.slots_per_gpu} slots), beyond the limit of {MAX_SLOTS} (far more than any "
                "deployment); check the sizes"
            )
        if self.num_groups > self.num_slots:
            raise EplbError(
                f"{self.num_groups} expert groups cannot fit {self.num_slots} slots per layer; the group count "
                "must divide the model's experts"
            )

    @property
    def num_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node

    @property
    def num_slots(self) -> int:
        """Physical expert slots per layer (logical experts + redundant replicas)."""
        return self.num_gpus * self.slots_per_gpu

    def check(self, num_experts: int) -> None:
        """Raise EplbError unless ``num_experts`` logical experts fit this topology."""
        if num_experts <= 0:
            raise EplbError(f"need at least one expert, got {num_experts}")
        if self.num_slots < num_experts:
            raise EplbError(
                f"{self.num_slots} slots ({self.num_gpus} GPUs x {self.slots_per_gpu}) cannot hold {num_experts} "
                f"experts; give at least {-(-num_experts // self.num_gpus)} slots per GPU or more GPUs"
            )
        if num_experts % self.num_groups != 0:
            raise EplbError(
                f"{num_experts} experts do not split into {self.num_groups} equal groups; "
                f"set the group count to a divisor of {num_experts}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["name"]:
            d.pop("name")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Topology":
        try:
            return cls(
                num_nodes=d["num_nodes"],
                gpus_per_node=d["gpus_per_node"],
                slots_per_gpu=d["slots_per_gpu"],
                num_groups=d.get("num_groups", 1),
                name=d.get("name", ""),
            )
        except KeyError as exc:
            raise EplbError(f"topology is missing {exc.args[0]!r}; give num_nodes, gpus_per_node, slots_per_gpu") from None
        except TypeError:
            raise EplbError(f"topology must be an object, got {type(d).__name__}") from None

    def describe(self) -> str:
        label = f"{self.name}: " if self.name else ""
        return (
            f"{label}{self.num_nodes} nodes x {self.gpus_per_node} GPUs x {self.slots_per_gpu} slots "
            f"= {self.num_slots} slots, {self.num_groups} expert groups"
        )


PRESETS: dict[str, Topology] = {
    # DeepSeek-V3/R1 prefill unit: EP32 over 4 nodes, 9 routed experts per GPU (256 + 32 redundant)
    "deepseek-v3-prefill": Topology(4, 8, 9, 8, name="deepseek-v3-prefill"),
    # DeepSeek-V3/R1 decode unit: EP144 over 18 nodes, 2 routed experts per GPU (256 + 32 redundant)
    "deepseek-v3-decode": Topology(18, 8, 2, 8, name="deepseek-v3-decode"),
    # The tech report's decode unit: EP320 over 40 nodes, 1 expert per GPU (256 + 64 redundant)
    "deepseek-v3-decode-320": Topology(40, 8, 1, 8, name="deepseek-v3-decode-320"),
}


def preset(name: str) -> Topology:
    """A named topology preset (see :data:`PRESETS`)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise EplbError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
