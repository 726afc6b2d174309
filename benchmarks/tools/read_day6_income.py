"""Read the hourly theoretical income off DeepSeek's published "Cost And Theoretical Income" figure.

    git -C open-infra-index show "56d8685:202502OpenSourceWeek/figures/Cost And Theoretical Income.jpg" > income.jpg
    python benchmarks/tools/read_day6_income.py income.jpg      # needs Pillow

Prints one value per bar (12:00 to 11:00, UTC+8) in USD, as bundled in
eplb/cost/data/deepseek_day_hourly.csv (rounded to $10). The y axis is calibrated by its tick marks
($5K to $35K); each bar's top is the median over its columns of the first bar-coloured pixel.
"""
from __future__ import annotations

import sys

import numpy as np


def read_bars(path: str) -> list[float]:
    from PIL import Image

    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    s = a.sum(2)
    axis = int(np.argmax((s < 200).sum(0)[:200]))                      # the left frame line
    ticks = [y for y in range(a.shape[0]) if s[y, axis - 2:axis].max() < 300 and s[y, axis - 6] > 600]
    if len(ticks) != 7:
        raise SystemExit(f"expected 7 y-axis ticks ($5K..$35K), found {len(ticks)}: is this the income figure?")
    k, c = np.polyfit(ticks, np.arange(35, 0, -5) * 1000.0, 1)
    blue = (r < 90) & (g > 130) & (g < 200) & (b > 220)
    blue[:ticks[0] + 11] = False                                        # the legend's colour patch
    cols = blue.sum(0) > 3
    bars, x = [], 0
    while x < cols.size:
        if not cols[x]:
            x += 1
            continue
        start = x
        while x < cols.size and cols[x]:
            x += 1
        if x - start > 8:
            tops = [np.nonzero(blue[:, j])[0].min() for j in range(start + 2, x - 2)]
            bars.append(float(k * np.median(tops) + c))
    return bars


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    values = read_bars(sys.argv[1])
    print("\n".join(f"{v:.0f}" for v in values))
    print(f"# {len(values)} bars, sum {sum(values):,.0f} USD", file=sys.stderr)
