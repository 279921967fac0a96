"""edgead: industrial visual anomaly detection from workstation to Jetson."""

__version__ = "0.1.0"
