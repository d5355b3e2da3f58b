"""planlab: the app that composes the planner core, the simulator and the live driver."""

__version__ = "0.1.0"
