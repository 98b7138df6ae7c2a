"""Advantage estimators (registry keyed by name) and shared loss pieces.

Importing this package registers every estimator module listed below.
"""
from critic_free_rl.algorithms.registry import (  # noqa: F401
    AdvantageInput,
    AdvantageOutput,
    EstimatorSpec,
    estimator_names,
    estimator_spec,
    get_estimator,
    register_estimator,
)
# estimator modules: importing one registers its estimators
from critic_free_rl.algorithms import (  # noqa: F401,E402
    dr_grpo,
    gae,
    grpo,
    reinforce_pp,
    rloo,
)
