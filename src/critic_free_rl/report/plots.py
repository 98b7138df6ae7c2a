"""Training curves, one PNG per metric, one line per configuration (mean over seeds,
shaded between the seeds' min and max)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from critic_free_rl.report.groups import Group


@dataclass(frozen=True)
class CurveSpec:
    """A plotted metric: TensorBoard tag, plot title, y-axis label, chart category."""

    tag: str
    title: str
    ylabel: str
    category: str

    @property
    def filename(self) -> str:
        return self.tag.replace("/", "_") + ".png"


CURVES: tuple[CurveSpec, ...] = (
    CurveSpec("eval/greedy_accuracy", "Held-out greedy accuracy", "accuracy", "accuracy"),
    CurveSpec("eval/sampling_accuracy", "Held-out sampling accuracy", "accuracy", "accuracy"),
    CurveSpec("reward/success_mean", "Success reward (mean per response)", "reward", "reward components"),
    CurveSpec("reward/dense_mean", "Dense PRM reward (mean return per response)", "reward", "reward components"),
    CurveSpec("reward/kl_mean", "KL penalty in the reward (mean per response)", "reward", "reward components"),
    CurveSpec("response/length_tokens", "Response length", "tokens", "responses"),
    CurveSpec("reward/steps_per_response", "Reasoning steps per response", "steps", "responses"),
)


def plot_curves(groups: list[Group], out_dir: Path) -> list[tuple[CurveSpec, Path]]:
    """Write one PNG per metric of :data:`CURVES` that some run logged; returns them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for spec in CURVES:
        curves = [(g.label, g.curve(spec.tag)) for g in groups]
        curves = [(label, c) for label, c in curves if c is not None]
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for label, c in curves:
            (line,) = ax.plot(c.steps, c.mean, marker="o" if len(c.steps) < 20 else None, markersize=3, label=label)
            ax.fill_between(c.steps, c.low, c.high, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set(title=spec.title, xlabel="training step", ylabel=spec.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out_dir / spec.filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append((spec, path))
    return written
