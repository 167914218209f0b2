"""A tiny package that pkgfleet's demo and tests build from Git."""

__version__ = "0.1.0"


def hello(who: str = "fleet") -> str:
    return f"Hello, {who}!"
