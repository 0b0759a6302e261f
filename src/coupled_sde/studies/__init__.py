"""Convergence and consistency studies: orders from shared paths, distances between members, plots."""

from .convergence import ConvergenceResult, fit_order, strong_convergence, weak_convergence
from .distance import member_distance
from .plots import plot_convergence, plot_member_distance

__all__ = [
    "ConvergenceResult",
    "fit_order",
    "member_distance",
    "plot_convergence",
    "plot_member_distance",
    "strong_convergence",
    "weak_convergence",
]
