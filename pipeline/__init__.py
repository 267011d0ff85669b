"""vidwatch runtime: capture -> ZeroMQ -> inference -> sink. Never imports torch."""

__version__ = "0.1.0"
