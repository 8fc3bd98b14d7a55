"""``overview.png``: a slide thumbnail with the mask blended in, a legend and the area table."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wsi_seg.review.areas import ClassArea
from wsi_seg.review.colour import blend

#: Longest side of the thumbnail in pixels.
OVERVIEW_MAX_SIDE = 1600


def overview_mpp(slide_size0: tuple[int, int], slide_mpp: float, max_side: int = OVERVIEW_MAX_SIDE) -> float:
    """The mpp at which the whole slide fits in ``max_side`` pixels (never finer than level 0)."""
    return slide_mpp * max(1.0, max(slide_size0) / max_side)


def blended_thumbnail(slide, mask, palette: np.ndarray, alpha: float, mpp: float) -> np.ndarray:
    """The slide at ``mpp`` with class colours mixed in (background untouched)."""
    rgb = slide.thumbnail(mpp)
    labels = mask.read(0, 0, rgb.shape[1], rgb.shape[0], mpp)
    return blend(rgb, labels, palette, alpha)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_overview(image: np.ndarray, areas: list[ClassArea], *, title: str, mpp: float) -> Image.Image:
    """``image`` with a legend panel on its right: colour, class name, mm^2 and % of tissue."""
    font, bold = _font(15), _font(18)
    line = 24
    subtitle = f"thumbnail at {mpp:.2f} um/px"
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [f"{a.name[:40]}" for a in areas]
    name_w = max([measure.textlength(t, font=font) for t in texts] + [measure.textlength("class", font=font)])
    col_area = 44 + int(name_w) + 16
    col_pct = col_area + 100
    panel_w = max(col_pct + 100, int(measure.textlength(title, font=bold)) + 40)
    height = max(image.shape[0], (len(areas) + 6) * line + 20)
    canvas = Image.new("RGB", (image.shape[1] + panel_w, height), "white")
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x, y = image.shape[1] + 16, 12
    draw.text((x, y), title, fill="black", font=bold)
    y += line
    draw.text((x, y), subtitle, fill=(90, 90, 90), font=font)
    y += 2 * line
    draw.text((x + 28, y), "class", fill="black", font=font)
    draw.text((x + col_area, y), "mm^2", fill="black", font=font)
    draw.text((x + col_pct, y), "% tissue", fill="black", font=font)
    y += line
    for area, text in zip(areas, texts):
        draw.rectangle([x, y + 3, x + 18, y + 19], fill=tuple(area.color), outline="black")
        draw.text((x + 28, y + 2), text, fill="black", font=font)
        draw.text((x + col_area, y + 2), f"{area.area_mm2:.3f}", fill="black", font=font)
        pct = "-" if area.percent_of_tissue is None else f"{area.percent_of_tissue:.1f}"
        draw.text((x + col_pct, y + 2), pct, fill="black", font=font)
        y += line
    return canvas
