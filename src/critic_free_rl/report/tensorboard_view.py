"""The comparison as a TensorBoard logdir: ``<report>/tb/<configuration>/`` holds each
configuration's seed-mean curves, and ``<report>/tb/`` a custom-scalars layout that puts
every configuration of a metric on one chart (the CUSTOM SCALARS tab)::

    tensorboard --logdir reports/<name>/tb
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from critic_free_rl.report.groups import Group
from critic_free_rl.report.plots import CURVES


def layout() -> dict[str, dict[str, list]]:
    """Custom-scalars layout (``SummaryWriter.add_custom_scalars`` format): one category per
    :class:`~critic_free_rl.report.plots.CurveSpec` category, one multiline chart per metric."""
    out: dict[str, dict[str, list]] = {}
    for spec in CURVES:
        out.setdefault(spec.category, {})[spec.title] = ["Multiline", [f"^{re.escape(spec.tag)}$"]]
    return out


def write_tensorboard_view(groups: list[Group], tb_dir: Path) -> Path:
    """(Re)write ``tb_dir``: the layout at its root, seed-mean curves per configuration."""
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(tb_dir, ignore_errors=True)
    with SummaryWriter(log_dir=str(tb_dir)) as writer:
        writer.add_custom_scalars(layout())
    for group in groups:
        with SummaryWriter(log_dir=str(tb_dir / re.sub(r"[^\w.,=+-]", "_", group.label))) as writer:
            for spec in CURVES:
                curve = group.curve(spec.tag)
                if curve is None:
                    continue
                for step, value in zip(curve.steps, curve.mean):
                    writer.add_scalar(spec.tag, float(value), int(step))
    return tb_dir
