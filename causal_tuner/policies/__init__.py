"""Bandit policies behind one seeded interface: ``select(arms, history) -> Arm``, ``update(arm, obs)``.

Registered names (see :func:`available_policies`): ``ba-ucb`` (ours, graph learned online),
``oracle-ba-ucb`` (true DAG given), ``bbb-ucb`` (Bayesian backdoor UCB), ``cn-ucb`` (UCB on the
true parents of the reward), ``ucb1``, ``thompson``, ``epsilon-greedy``, ``random``.
"""

from causal_tuner.policies.ba_ucb import BAUCB, OracleBAUCB
from causal_tuner.policies.base import (
    Arm,
    BanditContext,
    History,
    Policy,
    available_policies,
    get_policy_class,
    make_policy,
    plus_minus_arms,
    register,
)
from causal_tuner.policies.bbb import BBBUCB
from causal_tuner.policies.classic import CNUCB, UCB1, EpsilonGreedy, GaussianThompson, RandomPolicy

__all__ = [
    "BAUCB",
    "BBBUCB",
    "CNUCB",
    "UCB1",
    "Arm",
    "BanditContext",
    "EpsilonGreedy",
    "GaussianThompson",
    "History",
    "OracleBAUCB",
    "Policy",
    "RandomPolicy",
    "available_policies",
    "get_policy_class",
    "make_policy",
    "plus_minus_arms",
    "register",
]
