"""``index.html`` and its tiles: a static OpenSeadragon viewer of the slide and the mask.

Layout of the review folder::

    index.html              the page (names, legend and area table rendered here, escaped)
    viewer/review.js        the page's behaviour: viewer, opacity, class toggles
    viewer/review.css
    viewer/openseadragon/   openseadragon.min.js and its button images (npm package)
    slide_files/L/C_R.jpeg  DeepZoom tiles of the slide (openslide.deepzoom)
    mask_files/L/C_R.js     DeepZoom tiles of the mask on the same grid

Pages opened from disk (file://) may not read pixels of images or fetch files, so
the mask tiles are scripts: each calls ``wsiReviewTile(key, data)`` with the tile's
class ids, deflate-compressed and base64-encoded. The page colours them itself,
which is what lets a class be hidden without a second set of tiles. Nothing is
loaded from the network.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from wsi_seg.errors import WsiSegError
from wsi_seg.prefetch import ordered_map
from wsi_seg.review.areas import ClassArea

#: DeepZoom tile size and overlap (the usual 254 + 2 x 1 = 256).
DZ_TILE = 254
DZ_OVERLAP = 1
#: JPEG quality of the slide tiles.
DZ_QUALITY = 80

_VENDOR = Path(__file__).resolve().parent / "vendor"
_OSD_ENV = "WSI_SEG_OPENSEADRAGON_DIR"


class ViewerUnavailable(WsiSegError):
    """OpenSeadragon (an npm package) is not installed."""


def openseadragon_dir() -> Path:
    """The folder holding ``openseadragon.min.js`` and ``images/``.

    ``$WSI_SEG_OPENSEADRAGON_DIR`` when set, else the npm install next to this module
    (``wsi_seg/review/vendor/node_modules/openseadragon/build/openseadragon``).
    """
    override = os.environ.get(_OSD_ENV)
    folder = Path(override) if override else _VENDOR / "node_modules" / "openseadragon" / "build" / "openseadragon"
    if not (folder / "openseadragon.min.js").is_file() or not (folder / "images").is_dir():
        raise ViewerUnavailable(
            f"{folder}: OpenSeadragon is not installed; run `make install` (or `npm ci --prefix {_VENDOR}`), "
            f"set {_OSD_ENV}, or pass --no-viewer"
        )
    return folder


def _json_for_html(value) -> str:
    """JSON that is safe inside a <script type="application/json"> element."""
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def encode_mask_tile(key: str, labels: np.ndarray) -> str:
    """The script of one mask tile: ``wsiReviewTile(key, width, height, base64(deflate(ids)))``."""
    height, width = labels.shape
    data = base64.b64encode(zlib.compress(np.ascontiguousarray(labels, np.uint8).tobytes(), 6)).decode("ascii")
    return f'wsiReviewTile("{key}",{width},{height},"{data}");\n'


def _tile_addresses(dz) -> list[tuple[int, int, int]]:
    return [(level, col, row) for level in range(dz.level_count)
            for row in range(dz.level_tiles[level][1]) for col in range(dz.level_tiles[level][0])]


def write_tiles(out_dir: Path, slide, mask, *, threads: int = 2) -> dict:
    """DeepZoom tiles of the slide (JPEG) and of the mask (scripts) under ``out_dir``;
    returns the pyramid geometry the page needs."""
    from wsi_seg.io.slide import deepzoom_generator

    dz = deepzoom_generator(slide, tile_size=DZ_TILE, overlap=DZ_OVERLAP)
    top = dz.level_count - 1
    for level in range(dz.level_count):
        (out_dir / "slide_files" / str(level)).mkdir(parents=True)
        (out_dir / "mask_files" / str(level)).mkdir(parents=True)

    def one(address: tuple[int, int, int]) -> None:
        level, col, row = address
        name = f"{col}_{row}"
        dz.get_tile(level, (col, row)).save(out_dir / "slide_files" / str(level) / f"{name}.jpeg",
                                            quality=DZ_QUALITY)
        (x0, y0), _, _ = dz.get_tile_coordinates(level, (col, row))
        width, height = dz.get_tile_dimensions(level, (col, row))
        labels = mask.read(x0, y0, width, height, slide.mpp * 2 ** (top - level))
        script = encode_mask_tile(f"{level}/{name}", labels)
        (out_dir / "mask_files" / str(level) / f"{name}.js").write_text(script, encoding="ascii")

    for _ in ordered_map(one, _tile_addresses(dz), threads=threads, ahead=4 * threads):
        pass
    width, height = slide.dimensions
    return {"width": width, "height": height, "tileSize": DZ_TILE, "overlap": DZ_OVERLAP,
            "maxLevel": top, "format": "jpeg"}


def _legend_rows(areas: list[ClassArea]) -> str:
    rows = []
    for area in areas:
        r, g, b = area.color
        name = html.escape(area.name)
        percent = "&ndash;" if area.percent_of_tissue is None else f"{area.percent_of_tissue:.1f}"
        checked = "" if area.label == 0 else " checked"
        disabled = " disabled" if area.label == 0 else ""
        rows.append(
            f'<tr data-label="{area.label}">'
            f'<td><input type="checkbox" class="class-toggle" id="class-{area.label}" '
            f'data-label="{area.label}"{checked}{disabled}></td>'
            f'<td><span class="swatch" style="background: rgb({int(r)}, {int(g)}, {int(b)})"></span></td>'
            f'<td><label for="class-{area.label}">{name}</label></td>'
            f'<td class="num">{area.area_mm2:.3f}</td><td class="num">{percent}</td></tr>'
        )
    return "\n".join(rows)


def render_page(*, slide_name: str, areas: list[ClassArea], geometry: dict, alpha: float, mpp: float) -> str:
    """The HTML of ``index.html``: every name is escaped; data for the script is JSON."""
    template = resources.files("wsi_seg.review").joinpath("static/index.html").read_text(encoding="utf-8")
    data = {
        "slide": slide_name,
        "mpp": mpp,
        "opacity": alpha,
        "pyramid": geometry,
        "classes": [{"label": a.label, "name": a.name, "color": list(a.color), "visible": a.label != 0}
                    for a in areas],
    }
    replacements = {
        "TITLE": html.escape(slide_name),
        "MPP": f"{mpp:.4g}",
        "SIZE": f"{geometry['width']} &times; {geometry['height']}",
        "OPACITY": str(int(round(alpha * 100))),
        "LEGEND_ROWS": _legend_rows(areas),
        "DATA": _json_for_html(data),
    }
    # one pass, so text inserted for one marker is never searched for another
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda match: replacements[match.group(1)], template)


def write_viewer(out_dir: Path, slide, mask, areas: list[ClassArea], *, alpha: float, slide_name: str,
                 threads: int = 2) -> None:
    """Write ``index.html``, its scripts and every tile into ``out_dir``."""
    osd = openseadragon_dir()
    assets = out_dir / "viewer"
    shutil.copytree(osd / "images", assets / "openseadragon" / "images")
    shutil.copy2(osd / "openseadragon.min.js", assets / "openseadragon" / "openseadragon.min.js")
    static = resources.files("wsi_seg.review").joinpath("static")
    for name in ("review.js", "review.css"):
        (assets / name).write_text(static.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
    geometry = write_tiles(out_dir, slide, mask, threads=threads)
    page = render_page(slide_name=slide_name, areas=areas, geometry=geometry, alpha=alpha, mpp=slide.mpp)
    (out_dir / "index.html").write_text(page, encoding="utf-8")
