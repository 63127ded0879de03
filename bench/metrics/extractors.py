"""The networks behind the metrics, each loaded once per run, offline, and cached.

A metric's module declares how to load each network it runs with ``@network``: a loader
``load(*arguments, untrained, seed, device)`` that returns the network ready (on ``device``,
eval mode, no grad; ``bench.metrics.offline`` finds its weights) and a ``label(*arguments)``
that names it in the run's labels when it was built with seeded random weights
(``--untrained-extractors``). A metric's ``load`` asks ``Extractors.get(network, *arguments,
metric=name)``; ``Extractors`` keeps one loaded network per (network, arguments), so metrics
that run the same network with the same arguments share it, and records which metrics ran an
untrained one (``labels``).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Network:
    """How to load one kind of network (see the module doc); made by ``@network``."""

    load: Callable
    label: Callable[..., str | None]


def network(label: Callable[..., str | None]) -> Callable[[Callable], Network]:
    """Declare the decorated loader a ``Network``; ``label(*arguments)``: its name in the run's
    labels when built untrained (None: it is never labelled, e.g. a served judge)."""
    return lambda load: Network(load, label)


class Extractors:
    """The networks a run's metrics have loaded (see the module doc), with the run's
    ``options`` (``bench.metrics.MetricOptions``) and ``device``."""

    def __init__(self, options, device: torch.device | str = "cpu"):
        self.options = options
        self.device = torch.device(device)
        self._loaded: dict[tuple, object] = {}
        self.untrained: dict[str, list[str]] = {}  # label of an untrained network -> metrics using it

    def get(self, net: Network, *arguments, metric: str):
        """``net`` loaded with ``arguments`` (once), for ``metric``."""
        key = (net, arguments)
        if key not in self._loaded:
            self._loaded[key] = net.load(*arguments, untrained=self.options.untrained_extractors,
                                         seed=self.options.seed, device=self.device)  # fmt: skip
        label = net.label(*arguments) if self.options.untrained_extractors else None
        if label:
            users = self.untrained.setdefault(label, [])
            if metric not in users:
                users.append(metric)
        return self._loaded[key]

    def loaded(self, net: Network) -> list:
        """What ``net`` has loaded so far, in loading order."""
        return [value for (each, _), value in self._loaded.items() if each is net]

    def labels(self) -> list[str]:
        """One run label per untrained network, naming the metrics whose numbers it made."""
        return [
            f"untrained extractor {what} (seeded random weights) behind {', '.join(users)}"
            for what, users in self.untrained.items()
        ]
