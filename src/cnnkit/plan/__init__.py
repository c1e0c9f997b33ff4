"""nnU-Net's self-configuration (the guide's §6.5): fingerprint a data set, apply the rules, write a plan.

    from cnnkit.data.volumes import load_volumes
    from cnnkit.plan import fingerprint, make_plan, Plan
    vs = load_volumes("shapes-volumes")
    plan = make_plan(fingerprint(vs), budget=600)   # budget: MB of activation memory
    plan.save("plan.yaml"); Plan.load("plan.yaml") == plan

`cnnkit plan DATA` does the same and prints the decisions with their reasons; `cnnkit.api.plan` is
its Python form.
"""
from .fingerprint import fingerprint
from .rules import DEFAULT_BUDGET_MB, activation_mb, make_plan, pooling
from .schema import PLAN_VERSION, Plan

__all__ = ["DEFAULT_BUDGET_MB", "PLAN_VERSION", "Plan", "activation_mb", "fingerprint", "make_plan", "pooling"]
