"""lsr1bench: benchmark L-SR1 (limited-memory SR1 with a trust region) against first-order optimizers."""

__version__ = "0.1.0"
