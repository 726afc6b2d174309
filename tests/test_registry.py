"""The one registry mechanism shared by placement methods, replica choice and request routers."""
import pytest

from eplb._registry import Registry
from eplb.errors import EplbError, UnknownOptionError


def test_register_lookup_options_and_errors():
    reg = Registry("thing", skip=1)

    @reg.register("fast-one", quick=True)
    def fast(x, *, alpha=1.0, beta=2):
        """Adds alpha."""
        return x + alpha

    @reg.register("slow", "slow one")
    class Slow:
        def __init__(self, x, *, gamma="a"):
            self.gamma = gamma

    assert reg.names() == ["fast-one", "slow"] and reg.names(quick=True) == ["fast-one"]
    assert reg.describe() == {"fast-one": "Adds alpha.", "slow": "slow one"}
    assert reg.get("fast-one")(1) == 2.0 and "slow" in reg and "nope" not in reg
    assert list(reg.options("fast-one")) == ["alpha", "beta"] and list(reg.options("slow")) == ["gamma"]
    reg.check_options("fast-one", ["alpha"])
    with pytest.raises(UnknownOptionError, match=r"thing slow has no option 'alpha'; its options: gamma"):
        reg.check_options("slow", ["alpha"])
    with pytest.raises(TypeError):
        reg.check_options("slow", ["alpha"])
    with pytest.raises(EplbError, match="unknown thing 'nope'; choose one of fast-one, slow"):
        reg.get("nope")
    for bad in ("Fast", "fast_one", "-x", "a--b", ""):
        with pytest.raises(ValueError, match="lower case words joined by hyphens"):
            reg.register(bad)


def test_load_runs_once_before_first_lookup():
    calls = []
    reg = Registry("thing", load=lambda: calls.append(1))
    assert calls == [] and reg.names() == [] and reg.names() == [] and calls == [1]
