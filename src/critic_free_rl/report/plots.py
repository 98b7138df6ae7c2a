"""Training curves, one PNG per metric: one panel per algorithm, one line per reward shape
(the same colour for a shape in every panel), the mean over seeds shaded between the
seeds' min and max. Training-batch metrics are drawn as a trailing moving average over
:data:`SMOOTH_STEPS` steps (a batch's mix of short and long problems moves them more than
the policy does); held-out evaluations are drawn as logged."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from critic_free_rl.report.groups import Curve, Group

#: window of the trailing moving average of training-batch curves
SMOOTH_STEPS = 10


@dataclass(frozen=True)
class CurveSpec:
    """A plotted metric: TensorBoard tag, plot title, y-axis label, chart category, and
    whether it is a per-batch training metric (smoothed) rather than an evaluation."""

    tag: str
    title: str
    ylabel: str
    category: str
    smooth: bool = True

    @property
    def filename(self) -> str:
        return self.tag.replace("/", "_") + ".png"


CURVES: tuple[CurveSpec, ...] = (
    CurveSpec("eval/greedy_accuracy", "Held-out greedy accuracy", "accuracy", "accuracy", smooth=False),
    CurveSpec("eval/sampling_accuracy", "Held-out sampling accuracy", "accuracy", "accuracy", smooth=False),
    CurveSpec("reward/success_mean", "Success reward (mean per response)", "reward", "reward components"),
    CurveSpec("reward/dense_mean", "Dense PRM reward (mean return per response)", "reward", "reward components"),
    CurveSpec("reward/kl_mean", "KL penalty in the reward (mean per response)", "reward", "reward components"),
    CurveSpec("reward/prm_mean", "PRM score (mean over steps)", "score", "reward components"),
    CurveSpec("response/length_tokens", "Response length", "tokens", "responses"),
    CurveSpec("reward/steps_per_response", "Reasoning steps per response", "steps", "responses"),
    CurveSpec("reward/repeated_step_frac", "Repeated steps (share of all steps)", "fraction", "responses"),
    CurveSpec("response/truncated_frac", "Responses cut at the token limit", "fraction", "responses"),
)


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` points (fewer at the start); ``[n] -> [n]``."""
    c = np.cumsum(np.insert(np.asarray(x, dtype=np.float64), 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    start = np.maximum(idx - window, 0)
    return (c[idx] - c[start]) / (idx - start)


def _smoothed(c: Curve, window: int) -> Curve:
    return Curve(c.steps, *(moving_average(v, window) for v in (c.mean, c.low, c.high)))


def plot_curves(groups: list[Group], out_dir: Path) -> list[tuple[CurveSpec, Path]]:
    """Write one PNG per metric of :data:`CURVES` that some run logged; returns them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algorithms = sorted({g.algorithm for g in groups})
    variants = sorted({g.variant for g in groups})
    colour = {v: plt.get_cmap("tab20")(i % 20) for i, v in enumerate(variants)}  # a grid has up to 16 arms per algorithm
    written = []
    for spec in CURVES:
        curves = [(g, g.curve(spec.tag)) for g in groups]
        curves = [(g, c if not spec.smooth else _smoothed(c, SMOOTH_STEPS)) for g, c in curves if c is not None]
        if not curves:
            continue
        fig, axes = plt.subplots(1, len(algorithms), figsize=(4.2 * len(algorithms) + 1.6, 3.8), sharey=True, squeeze=False)
        for ax, algorithm in zip(axes[0], algorithms):
            for g, c in curves:
                if g.algorithm == algorithm:
                    ax.plot(c.steps, c.mean, color=colour[g.variant], marker="o" if len(c.steps) < 20 else None,
                            markersize=3, label=g.variant)
                    ax.fill_between(c.steps, c.low, c.high, color=colour[g.variant], alpha=0.15, linewidth=0)
            ax.set(title=algorithm, xlabel="training step")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(spec.ylabel)
        handles = [plt.Line2D([], [], color=colour[v], label=v) for v in variants]
        fig.legend(handles=handles, loc="center right", fontsize=8)
        suffix = f" ({SMOOTH_STEPS}-step moving average)" if spec.smooth else ""
        fig.suptitle(spec.title + suffix)
        fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
        path = out_dir / spec.filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append((spec, path))
    return written
