"""A simulated user population: segments, sparse heavy-tailed reactions, delays, withdrawals, adversaries."""

from rluf.simulate.config import SEGMENTS, SimulateConfig
from rluf.simulate.engine import react_to_file, run_simulation
from rluf.simulate.responders import Responder, StyleResponder, make_responder

__all__ = ["SEGMENTS", "Responder", "SimulateConfig", "StyleResponder", "make_responder", "react_to_file",
           "run_simulation"]
