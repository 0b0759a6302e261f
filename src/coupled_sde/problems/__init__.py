"""Closed-form problems: SDEs with exact strong solutions, and data with exact scores/velocities.

Usable by users (as references for their own samplers) and by the tests, which prove the integrators,
couplings and editing methods against them.
"""

from .gaussian import GaussianData, GaussianMixture
from .linear import CommutativeLinear, GeometricBrownianMotion, OrnsteinUhlenbeck, TimeDependentOU

__all__ = [
    "CommutativeLinear",
    "GaussianData",
    "GaussianMixture",
    "GeometricBrownianMotion",
    "OrnsteinUhlenbeck",
    "TimeDependentOU",
]
