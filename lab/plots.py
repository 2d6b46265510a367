"""The report's pictures, as base64 PNG to put inside the HTML (`<img src="data:image/png;...">`),
so report.html is one file that opens anywhere, offline.

matplotlib's object interface with the Agg canvas: no pyplot (no global figure state, no GUI
backend, safe in the API's threads), matplotlib's default font DejaVu Sans (shipped with it,
so no font lookup fails), no PNG metadata with a version or date (same figures, same bytes).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lab.compare import PER
from lab.figures import OPEN_BUCKETS, ArmFigures
from lab.results import BUCKETS, CHANNELS


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 7.0, height: float = 3.6) -> Figure:
    return Figure(figsize=(width, height))


def recovery_curves(arms: Sequence[ArmFigures], matched: Sequence[tuple[ArmFigures, str]] = ()) -> str:
    """Cumulative share of the hand-over balance recovered, by day after hand-over, per arm;
    `matched`: the champion in a challenger's segments only (dashed), its like-for-like line."""
    fig = _figure()
    ax = fig.subplots()
    for a in arms:
        days = [d for d, v in enumerate(a.curve) if v is not None]
        ax.plot(days, [100 * (a.curve[d] or 0.0) for d in days], label=f"{a.label} ({a.loans} loans)")
    for a, where in matched:
        days = [d for d, v in enumerate(a.curve) if v is not None]
        label = f"champion in {where} only ({a.loans} loans)"
        ax.plot(days, [100 * (a.curve[d] or 0.0) for d in days], linestyle="--", color="tab:blue", label=label)
    ax.set_xlabel("days after hand-over")
    ax.set_ylabel("% of hand-over balance recovered")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def cost_per_unit(arms: Sequence[ArmFigures]) -> str:
    """Cost to collect per `PER` recovered, per arm, with the arm's 95 % interval."""
    fig = _figure(height=3.0)
    ax = fig.subplots()
    shown = [a for a in arms if a.cost_per_unit is not None]
    values = [PER * (a.cost_per_unit or 0.0) for a in shown]
    low, high = [], []
    for a, v in zip(shown, values, strict=True):
        ci = a.ci.get("cost_per_unit")
        low.append(v - PER * ci[0] if ci else 0.0)
        high.append(PER * ci[1] - v if ci else 0.0)
    positions = list(range(len(shown)))
    ax.bar(positions, values, yerr=[low, high], capsize=6, color="#4c72b0")
    ax.set_xticks(positions, [a.label for a in shown], rotation=0, fontsize=8)
    currency = shown[0].currency if shown else ""
    ax.set_ylabel(f"{currency} spent per {PER} {currency} recovered")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def contacts(arms: Sequence[ArmFigures]) -> str:
    """Contacts per loan by channel, one bar per arm in each channel."""
    fig = _figure(height=3.0)
    ax = fig.subplots()
    width = 0.8 / max(1, len(arms))
    for i, a in enumerate(arms):
        xs = [c + i * width for c in range(len(CHANNELS))]
        ax.bar(xs, [a.contacts_per_loan[ch] for ch in CHANNELS], width=width, label=a.label)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(CHANNELS))], list(CHANNELS))
    ax.set_ylabel("contacts per loan")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def roll_heatmap(a: ArmFigures) -> str:
    """The roll-rate matrix as a heat map: rows where loans were, columns where they were 30
    days later; darker is a larger share."""
    fig = _figure(width=6.0, height=2.6)
    ax = fig.subplots()
    grid = [[(a.roll_rates[r][c] or 0.0) * 100 for c in BUCKETS] for r in OPEN_BUCKETS]
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=100, aspect="auto")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if value:
                ax.text(j, i, f"{value:.0f}%", ha="center", va="center", color="white" if value > 55 else "black")
    ax.set_xticks(range(len(BUCKETS)), [b.replace("_", " ") for b in BUCKETS], fontsize=8)
    ax.set_yticks(range(len(OPEN_BUCKETS)), [f"DPD {b}" for b in OPEN_BUCKETS], fontsize=8)
    ax.set_xlabel("30 days later")
    ax.set_title(a.label, fontsize=9)
    return _png(fig)
