"""The rule engine: events in, decisions out, by the compiled rules (`daemon.rules`)."""

from daemon.engine.engine import Engine, EngineObserver, Evaluation

__all__ = ["Engine", "EngineObserver", "Evaluation"]
