"""podnet: Kubernetes networking built from its parts on Linux hosts, and proved."""

__version__ = "0.1.0"
