"""Parity verification: reference outputs, comparators, gates, culprit layers and the HTML report."""

from edgead.verify.run import VerifyRequest, verify

__all__ = ["VerifyRequest", "verify"]
