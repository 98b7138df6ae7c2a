"""Reward pipeline of arXiv 2410.15115: verifiable success reward + refined PRM step rewards.

Modules: ``success`` (math-verify in worker processes), ``steps`` (step segmentation and
step -> token mapping), ``shapes`` (the registry of step-reward shapes: Clip, Delta, min
form, progress, ...) and ``shaping`` (applying one, the reward config's checks),
``overlong`` (DAPO's length penalty), ``prm`` / ``orm`` (learned reward models),
``monitors`` (reward-hacking metrics) and ``pipeline`` (all of it per batch).

Nothing heavy is imported here: verify workers import ``rewards.success`` without torch.
"""
