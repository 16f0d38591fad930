"""A PNG map of a guest's GPA window, one cell per 4K page, coloured by RMP state.

The states array is `harness.evidence.rmp.gpa_states`' encoding: 0 shared, 1 private
4K, 2 private 2M, 3 violation. Rows are 2 MiB (512 pages) and start on 2 MiB
boundaries, so a 2M entry is one whole row and a misaligned one straddles two.
matplotlib is imported inside the function: importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PAGE = 4096
ROW_PAGES = 512  # 2 MiB
# Index = state value (rmp.STATE_NAMES order); the last colour is "no page here" (row padding).
STATE_LABELS = ("shared", "private 4K", "private 2M", "violation")
STATE_COLOURS = ("#d9d9d9", "#74c476", "#2171b5", "#e31a1c")
PAD_COLOUR = "#ffffff"


def layout(states: np.ndarray, gpa_start: int) -> tuple[np.ndarray, int, int]:
    """(rows x width grid with -1 for padding, GPA of the first row, pages per row)."""
    states = np.asarray(states, dtype=np.int8).ravel()
    first = gpa_start // PAGE
    if states.size == 0:
        return np.full((1, 1), -1, dtype=np.int8), gpa_start, 1
    if states.size <= ROW_PAGES and (first % ROW_PAGES) + states.size <= ROW_PAGES:
        # Fits inside one 2M frame: no padding, so a small window stays readable.
        return states.reshape(1, -1).copy(), gpa_start, max(states.size, 1)
    lead = first % ROW_PAGES
    total = lead + states.size
    rows = -(-total // ROW_PAGES)
    grid = np.full(rows * ROW_PAGES, -1, dtype=np.int8)
    grid[lead:lead + states.size] = states
    return grid.reshape(rows, ROW_PAGES), (first - lead) * PAGE, ROW_PAGES


def draw_rmp_map(states: np.ndarray, gpa_start: int, out_png: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    grid, base, width = layout(states, gpa_start)
    rows = grid.shape[0]
    # Figure/FigureCanvasAgg rather than pyplot: no global backend switch, no display needed.
    fig = Figure(figsize=(10, min(2.2 + 0.35 * rows, 30.0)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = ListedColormap([PAD_COLOUR, *STATE_COLOURS])
    norm = BoundaryNorm([-1.5, -0.5, 0.5, 1.5, 2.5, 3.5], cmap.N)
    ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest",
              extent=(0, width, rows, 0))

    xticks = np.linspace(0, width, num=min(width, 8) + 1).round().astype(int)
    ax.set_xticks(xticks)
    ax.set_xticklabels([f"+{int(x) * PAGE:#x}" for x in xticks], fontsize=7)
    step = max(1, -(-rows // 16))  # at most ~16 row labels
    yrows = list(range(0, rows, step))
    ax.set_yticks([r + 0.5 for r in yrows])
    ax.set_yticklabels([f"{base + r * width * PAGE:#x}" for r in yrows], fontsize=7)
    if rows <= 64:  # row separators make each 2 MiB frame visible (until they would be all you see)
        for r in range(1, rows):
            ax.axhline(r, color="white", linewidth=1)
    ax.set_xlabel(f"offset in row ({width * PAGE // 1024} KiB per row, one cell per 4K page)")
    ax.set_ylabel("GPA")
    ax.set_title(title, fontsize=8, wrap=True)

    counts = np.bincount(np.asarray(states, dtype=np.int64).ravel().clip(0, 3), minlength=4)
    handles = [Patch(facecolor=c, edgecolor="black", label=f"{lbl} ({n})")
               for lbl, c, n in zip(STATE_LABELS, STATE_COLOURS, counts)]
    if (grid < 0).any():
        handles.append(Patch(facecolor=PAD_COLOUR, edgecolor="black", label="outside the window"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7, frameon=False)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
