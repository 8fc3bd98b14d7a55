"""Synthetic H&E breast-biopsy slides with exact ground-truth label masks.

A slide is built in two stages:

1. Layout (coarse, physical units). A label map at ``LAYOUT_UM`` microns per
   cell is drawn from random geometry: tissue fragments (noisy ellipses) on
   glass, normal stroma inside; one or more tumour regions of desmoplastic
   stroma holding irregular malignant nests, some with central necrosis; benign
   ducts (epithelial rings around a lumen of secretion) and lobules of small
   acini in the normal stroma; small vessels full of blood. Nuclei, red cells
   and debris are drawn as a list of objects (position, size, shape, darkness)
   whose density and size depend on the class under them.
2. Rendering (per row band, vectorised numpy). The label map is upsampled with
   a smooth random displacement (organic boundaries); stains are composed in
   optical-density space (Beer-Lambert): eosin modulated by fibre textures
   (oriented bundles in normal stroma, wavy in desmoplastic stroma, granular in
   necrosis, which is also more eosinophilic and full of nuclear dust),
   haematoxylin from the stamped nuclei, red cells, pen ink, noise. The objects
   move with the same displacement as the labels, so each lies in its class.

The mask written next to the slide is the upsampled label map itself, so it is
the exact ground truth of what was rendered (pen ink is labelled background).
Classes overlap in mean colour on purpose: benign and malignant epithelium
share their cytoplasm and differ in nuclear size, shape and crowding; normal
and desmoplastic stroma differ mostly in texture and cellularity.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from wsi_seg.errors import InputError, OutputError
from wsi_seg.prefetch import ordered_map
from wsi_seg.io.tiff import write_aperio_svs, write_pyramidal_tiff

__all__ = ["BIOPSY_CLASSES", "LAYOUT_UM", "synthesize", "synthesize_slide"]

#: The 8 labels of the breast-biopsy dataset and their display colours (mask palette).
BIOPSY_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("background", (255, 255, 255)),
    ("benign epithelium", (0, 170, 0)),
    ("malignant epithelium", (220, 20, 20)),
    ("normal stroma", (250, 160, 200)),
    ("desmoplastic stroma", (140, 90, 200)),
    ("secretion", (250, 220, 0)),
    ("blood", (250, 120, 0)),
    ("necrosis", (90, 90, 90)),
)
BACKGROUND, BENIGN, MALIGNANT, STROMA, DESMOPLASTIC, SECRETION, BLOOD, NECROSIS = range(8)

LAYOUT_UM = 4.0  # microns per layout cell
_BAND_PX = 128  # rendering band height (level-0 rows)
_THREADS = 2  # bands rendered in parallel (numpy releases the GIL)
_TEX = 512  # periodic texture size (px)

# stain optical-density vectors (R, G, B) per unit amount
_HEMATOXYLIN = np.array([0.62, 0.74, 0.30], np.float32)
_EOSIN = np.array([0.12, 0.92, 0.38], np.float32)
_RED_CELL = np.array([0.10, 0.78, 0.62], np.float32)
_PEN_INKS = {
    "green": np.array([0.95, 0.30, 0.75], np.float32),
    "blue": np.array([1.00, 0.65, 0.20], np.float32),
    "black": np.array([0.95, 0.95, 0.90], np.float32),
}

# per class: eosin amount, haematoxylin background, texture id, texture strength
# textures: 0 none/fine grain, 1 oriented fibres, 2 wavy fibres, 3 granular debris
_TISSUE = {
    BACKGROUND: (0.00, 0.00, 0, 0.0),
    BENIGN: (0.36, 0.13, 0, 0.35),
    MALIGNANT: (0.36, 0.11, 0, 0.35),
    STROMA: (0.52, 0.04, 1, 0.55),
    DESMOPLASTIC: (0.36, 0.10, 2, 0.45),
    SECRETION: (0.24, 0.05, 0, 0.15),
    BLOOD: (0.24, 0.03, 0, 0.20),
    NECROSIS: (0.46, 0.15, 3, 0.70),
}

# object kinds stamped at full resolution: (channel, profile)
_H, _R = 0, 1  # haematoxylin or red-cell channel
_SOLID, _RIM = 0, 1


# =========================================================================== layout


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean, unit std (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-6)


def _blob_radius(shape, cy, cx, ry, rx, angle, rng, rough=0.25):
    """Normalised radius of a noisy ellipse over its bounding box.

    Returns (slices, r) with r <= 1 inside; the radius varies with angle by a
    random Fourier series (amplitude ~rough). None when off the grid.
    """
    r_max = max(ry, rx) * (1 + 2 * rough) + 2
    y0, y1 = max(0, int(cy - r_max)), min(shape[0], int(cy + r_max) + 1)
    x0, x1 = max(0, int(cx - r_max)), min(shape[1], int(cx + r_max) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(angle), math.sin(angle)
    u = (dx * c + dy * s) / rx
    v = (-dx * s + dy * c) / ry
    theta = np.arctan2(v, u)
    wobble = np.ones_like(theta)
    for k in range(2, 7):
        wobble += rng.normal(0, rough / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return (slice(y0, y1), slice(x0, x1)), np.sqrt(u * u + v * v) / np.maximum(wobble, 0.3)


def _blob(shape, cy, cx, ry, rx, angle, rng, rough=0.25):
    """(slices, bool mask) of the cells inside a noisy ellipse, or None."""
    got = _blob_radius(shape, cy, cx, ry, rx, angle, rng, rough)
    if got is None:
        return None
    return got[0], got[1] <= 1.0


def _random_cells(rng, where: np.ndarray, n: int) -> np.ndarray:
    """``n`` random (y, x) cell coordinates among the True cells of ``where``."""
    idx = np.flatnonzero(where)
    if idx.size == 0:
        return np.empty((0, 2), int)
    pick = rng.choice(idx, size=min(n, idx.size), replace=False)
    return np.stack(np.unravel_index(pick, where.shape), axis=1)


def _layout(rng: np.random.Generator, gh: int, gw: int) -> np.ndarray:
    """The coarse label map (gh, gw) uint8."""
    um = LAYOUT_UM
    label = np.zeros((gh, gw), np.uint8)
    area_mm2 = gh * gw * (um / 1000) ** 2

    # tissue fragments: one or two long cores and smaller irregular pieces
    n_frag = 2 + int(rng.integers(0, 2)) + int(area_mm2 > 20)
    for i in range(n_frag):
        if i == 0:
            cy, cx = gh * rng.uniform(0.4, 0.6), gw * rng.uniform(0.4, 0.6)
            ry, rx = min(gh, gw) * rng.uniform(0.24, 0.3), max(gh, gw) * rng.uniform(0.33, 0.4)
            angle = rng.uniform(-0.35, 0.35) + (0 if gw >= gh else np.pi / 2)
        else:
            cy, cx = gh * rng.uniform(0.15, 0.85), gw * rng.uniform(0.15, 0.85)
            ry = min(gh, gw) * rng.uniform(0.1, 0.18)
            rx, angle = ry * rng.uniform(1.0, 2.5), rng.uniform(0, np.pi)
        got = _blob(label.shape, cy, cx, ry, rx, angle, rng, rough=0.35)
        if got:
            sl, m = got
            label[sl][m] = STROMA
    tissue = label > 0
    # keep a margin of glass around the slide edge
    margin = max(2, int(min(gh, gw) * 0.04))
    label[:margin], label[-margin:], label[:, :margin], label[:, -margin:] = 0, 0, 0, 0
    tissue = label > 0
    depth = ndimage.distance_transform_edt(tissue)

    # tumour regions: desmoplastic stroma with malignant nests, some necrotic
    n_tumour = 1 + int(area_mm2 > 15) + int(rng.random() < 0.3)
    tumour = np.zeros_like(tissue)
    for _ in range(n_tumour):
        radius = min(850 / um, depth.max() * 0.9, max(gh, gw) * 0.22) * rng.uniform(0.7, 1.0)
        spots = _random_cells(rng, depth >= min(radius * 0.6, depth.max() * 0.8), 1)
        if not len(spots):
            continue
        cy, cx = spots[0]
        got = _blob(label.shape, cy, cx, radius, radius * rng.uniform(0.8, 1.3), rng.uniform(0, np.pi), rng, 0.3)
        if not got:
            continue
        sl, m = got
        m &= tissue[sl]
        label[sl][m] = DESMOPLASTIC
        tumour[sl] |= m
        region_area = m.sum()
        n_nests = max(3, int(region_area * um * um / 22000))
        necrotic = 0
        for j, (ny, nx) in enumerate(_random_cells(rng, tumour & (label == DESMOPLASTIC), n_nests)):
            r_um = rng.uniform(25, 130) if j else rng.uniform(110, 150)
            rr = r_um / um
            got = _blob(label.shape, ny, nx, rr, rr * rng.uniform(0.5, 1.4), rng.uniform(0, np.pi), rng, 0.45)
            if not got:
                continue
            nsl, nm = got
            nm &= tumour[nsl]
            label[nsl][nm] = MALIGNANT
            if r_um > 85 and (necrotic == 0 or rng.random() < 0.45):
                got = _blob(label.shape, ny, nx, rr * 0.45, rr * 0.45, 0.0, rng, 0.3)
                if got:
                    csl, cm = got
                    cm &= label[csl] == MALIGNANT
                    label[csl][cm] = NECROSIS
                    necrotic += 1
        # small infiltrating cords and clusters
        for ny, nx in _random_cells(rng, tumour & (label == DESMOPLASTIC), n_nests * 2):
            rr = rng.uniform(8, 22) / um
            got = _blob(label.shape, ny, nx, rr, rr * rng.uniform(1.0, 3.0), rng.uniform(0, np.pi), rng, 0.3)
            if got:
                nsl, nm = got
                nm &= label[nsl] == DESMOPLASTIC
                label[nsl][nm] = MALIGNANT

    # benign ducts and lobules in normal stroma away from the tumour
    free = (label == STROMA) & ~ndimage.binary_dilation(tumour, iterations=int(60 / um))
    n_ducts = max(2, int(area_mm2 * 2.0))
    for cy, cx in _random_cells(rng, free, n_ducts):
        if rng.random() < 0.35:  # a lobule: a cluster of small acini
            for _ in range(int(rng.integers(6, 16))):
                ay = cy + rng.normal(0, 90 / um)
                ax = cx + rng.normal(0, 90 / um)
                ra = rng.uniform(14, 30) / um
                _ring(label, ay, ax, ra, ra * rng.uniform(0.8, 1.2), rng, wall_um=rng.uniform(10, 14), lumen=0.5)
        else:
            ro = rng.uniform(45, 150) / um
            _ring(label, cy, cx, ro, ro * rng.uniform(0.6, 1.0), rng, wall_um=rng.uniform(14, 26), lumen=1.0)

    # small vessels with blood, in any stroma
    stroma = (label == STROMA) | (label == DESMOPLASTIC)
    n_vessels = max(3, int(area_mm2 * 8))
    for vy, vx in _random_cells(rng, stroma, n_vessels):
        rv = rng.uniform(6, 24) / um
        got = _blob(label.shape, vy, vx, rv, rv * rng.uniform(1.0, 2.5), rng.uniform(0, np.pi), rng, 0.15)
        if got:
            sl, m = got
            m &= (label[sl] == STROMA) | (label[sl] == DESMOPLASTIC)
            label[sl][m] = BLOOD

    return label


def _ring(label, cy, cx, ry, rx, rng, wall_um: float, lumen: float) -> None:
    """A duct or acinus: an epithelial ring in normal stroma around a lumen.

    The lumen holds secretion (always when ``lumen`` >= 1, else half the time;
    otherwise it is closed by epithelium).
    """
    got = _blob_radius(label.shape, cy, cx, ry, rx, rng.uniform(0, np.pi), rng, 0.15)
    if not got:
        return
    sl, r = got
    inside = (r <= 1.0) & (label[sl] == STROMA)
    if not inside.any():
        return
    inner = max(0.0, 1 - wall_um / LAYOUT_UM / max(min(ry, rx), 1e-3))
    label[sl][inside] = BENIGN
    if lumen >= 1 or rng.random() < lumen:
        label[sl][inside & (r <= inner)] = SECRETION


def _pen_strokes(rng, label) -> np.ndarray:
    """2-3 marker strokes: an arc over a tissue edge and short marks on glass."""
    gh, gw = label.shape
    pen_map = np.zeros_like(label)
    names = list(_PEN_INKS)
    width_cells = max(3.0, min(gh, gw) * 0.025)
    tissue = label > 0
    edge = tissue & ~ndimage.binary_erosion(tissue, iterations=2)
    strokes = []
    spot = _random_cells(rng, edge, 1)
    if len(spot):  # an arc centred on a tissue edge, half over tissue
        cy, cx = spot[0]
        rad = min(gh, gw) * rng.uniform(0.12, 0.2)
        t0 = rng.uniform(0, 2 * np.pi)
        t = np.linspace(t0, t0 + rng.uniform(1.5, 2.6), 200)
        strokes.append((cy + rad * np.sin(t) - rad * np.sin(t0 + 0.9), cx + rad * np.cos(t) - rad * np.cos(t0 + 0.9)))
    glass = ~ndimage.binary_dilation(tissue, iterations=int(width_cells * 2))
    for _ in range(int(rng.integers(1, 3))):  # short marks on glass
        spot = _random_cells(rng, glass, 1)
        if not len(spot):
            break
        cy, cx = spot[0]
        length = min(gh, gw) * rng.uniform(0.05, 0.15)
        a = rng.uniform(0, np.pi)
        t = np.linspace(-0.5, 0.5, 80) * length
        bend = rng.normal(0, 0.15) * t * t / max(length, 1)
        strokes.append((cy + t * np.sin(a) + bend * np.cos(a), cx + t * np.cos(a) - bend * np.sin(a)))
    for k, (ys, xs) in enumerate(strokes):
        path = np.zeros((gh, gw), bool)
        iy, ix = np.round(ys).astype(int), np.round(xs).astype(int)
        ok = (iy >= 0) & (iy < gh) & (ix >= 0) & (ix < gw)
        if not ok.any():
            continue
        path[iy[ok], ix[ok]] = True
        near = ndimage.distance_transform_edt(~path) <= width_cells / 2
        pen_map[near] = 1 + int(rng.integers(0, len(names))) if k else 1 + (k % len(names))
    return pen_map


# =========================================================================== objects


def _objects(rng: np.random.Generator, label: np.ndarray, mpp: float):
    """Nuclei, red cells and debris as arrays (level-0 px), sorted by y.

    Columns: y, x, a (semi-major px), b (semi-minor px), angle, amount,
    channel (_H or _R), profile (_SOLID or _RIM).
    """
    um = LAYOUT_UM
    cell_mm2 = (um / 1000) ** 2
    orient = _smooth_noise(rng, label.shape, 40) * 1.2  # fibre orientation (radians) in stroma
    # (class, density per mm2, a_um (mean, sd), b/a range, amount (mean, sd), channel, profile, orientation)
    kinds = [
        (BENIGN, 17000, (3.1, 0.35), (0.7, 0.95), (0.8, 0.12), _H, _SOLID, None),
        (MALIGNANT, 9500, (5.0, 1.3), (0.55, 0.95), (0.9, 0.25), _H, _RIM, None),
        (STROMA, 700, (7.0, 1.5), (0.16, 0.28), (0.95, 0.15), _H, _SOLID, "fibre"),
        (STROMA, 120, (2.6, 0.3), (0.85, 1.0), (1.1, 0.1), _H, _SOLID, None),
        (DESMOPLASTIC, 1300, (6.0, 1.3), (0.3, 0.5), (0.70, 0.15), _H, _SOLID, "fibre"),
        (DESMOPLASTIC, 500, (2.6, 0.3), (0.85, 1.0), (1.1, 0.1), _H, _SOLID, None),
        (SECRETION, 60, (4.0, 0.8), (0.8, 1.0), (0.35, 0.1), _H, _SOLID, None),
        (BLOOD, 24000, (3.5, 0.25), (0.85, 1.0), (0.75, 0.1), _R, _RIM, None),
        (BLOOD, 250, (3.0, 0.3), (0.85, 1.0), (1.0, 0.1), _H, _SOLID, None),
        (NECROSIS, 9000, (1.2, 0.4), (0.6, 1.0), (1.4, 0.2), _H, _SOLID, None),
        (NECROSIS, 900, (2.4, 0.4), (0.8, 1.0), (1.6, 0.2), _H, _SOLID, None),
        (NECROSIS, 1500, (4.5, 1.0), (0.7, 1.0), (0.22, 0.06), _H, _SOLID, None),
    ]
    cols = []
    for cls, density, (a_mu, a_sd), (q0, q1), (v_mu, v_sd), channel, profile, how in kinds:
        cy, cx = np.nonzero(label == cls)
        counts = rng.poisson(density * cell_mm2, size=cy.size)
        n = int(counts.sum())
        if n == 0:
            continue
        gy, gx = np.repeat(cy, counts), np.repeat(cx, counts)
        y_um = (gy + rng.random(n)) * um
        x_um = (gx + rng.random(n)) * um
        a = np.clip(rng.normal(a_mu, a_sd, n), a_mu * 0.4, a_mu * 2.2)
        b = a * rng.uniform(q0, q1, n)
        if how == "fibre":
            angle = orient[gy, gx] + rng.normal(0, 0.25 if cls == STROMA else 0.6, n)
        else:
            angle = rng.uniform(0, np.pi, n)
        amount = np.clip(rng.normal(v_mu, v_sd, n), 0.05, 2.0)
        cols.append(
            np.stack(
                [y_um / mpp, x_um / mpp, a / mpp, b / mpp, angle, amount,
                 np.full(n, channel), np.full(n, profile), np.full(n, cls)],
                axis=1,
            ).astype(np.float32)
        )
        if cls == MALIGNANT:  # nucleoli: small dark dots inside some malignant nuclei
            pick = rng.random(n) < 0.55
            k = int(pick.sum())
            off = rng.uniform(-0.4, 0.4, (k, 2)) * a[pick, None]
            r = rng.uniform(0.6, 1.0, k)
            cols.append(
                np.stack(
                    [y_um[pick] / mpp + off[:, 0] / mpp, x_um[pick] / mpp + off[:, 1] / mpp, r / mpp, r / mpp,
                     np.zeros(k), np.full(k, 1.3), np.full(k, _H), np.full(k, _SOLID), np.full(k, cls)],
                    axis=1,
                ).astype(np.float32)
            )
    if not cols:
        return np.zeros((0, 9), np.float32)
    obj = np.concatenate(cols, axis=0)
    return obj[np.argsort(obj[:, 0], kind="stable")]


def _stamp(band_maps: np.ndarray, y0: int, objs: np.ndarray) -> None:
    """Draw elliptical objects into ``band_maps`` (2, h, w) by maximum."""
    _, h, w = band_maps.shape
    if not len(objs):
        return
    reach = np.ceil(objs[:, 2] + 1.5).astype(int)
    for r in np.unique(np.minimum(reach, 40)):
        group = objs[np.minimum(reach, 40) == r]
        oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
        oy, ox = oy.ravel().astype(np.float32), ox.ravel().astype(np.float32)
        for start in range(0, len(group), max(1, 400_000 // oy.size)):
            g = group[start : start + max(1, 400_000 // oy.size)]
            cy, cx = np.floor(g[:, 0]).astype(int), np.floor(g[:, 1]).astype(int)
            fy, fx = g[:, 0:1] - cy[:, None], g[:, 1:2] - cx[:, None]
            dy, dx = oy[None] - fy + 0.5, ox[None] - fx + 0.5
            c, s = np.cos(g[:, 4:5]), np.sin(g[:, 4:5])
            u = (dx * c + dy * s) / g[:, 2:3]
            v = (-dx * s + dy * c) / g[:, 3:4]
            d2 = u * u + v * v
            edge = np.clip((1.0 - d2) * np.maximum(g[:, 3:4], 1.0) * 0.9, 0.0, 1.0)
            rim = g[:, 7:8] == _RIM
            profile = np.where(rim, 0.55 + 0.45 * np.clip(d2, 0, 1), 1.0)
            val = (edge * profile * g[:, 5:6]).astype(np.float32)
            py, px = cy[:, None] + oy[None].astype(int) - y0, cx[:, None] + ox[None].astype(int)
            ok = (val > 0.01) & (py >= 0) & (py < h) & (px >= 0) & (px < w)
            ch = np.broadcast_to(g[:, 6:7].astype(int), val.shape)
            np.maximum.at(band_maps, (ch[ok], py[ok], px[ok]), val[ok])


# =========================================================================== textures


def _periodic_texture(rng, kind: str, n: int = _TEX) -> np.ndarray:
    """A tileable texture (zero mean, unit std) from noise filtered in the Fourier domain."""
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    if kind == "fibre":  # thin collagen fibres along x
        spec = np.exp(-((fx / 0.008) ** 2) - ((fy / 0.09) ** 2)) * (f > 0.004)
    elif kind == "wavy":  # loose, tangled, wavy strands
        spec = np.exp(-(((f - 0.08) / 0.03) ** 2))
    elif kind == "granular":  # debris
        spec = np.exp(-((f / 0.15) ** 2))
    else:  # fine grain
        spec = np.exp(-((f / 0.3) ** 2))
    noise = np.fft.fft2(rng.standard_normal((n, n)))
    field = np.real(np.fft.ifft2(noise * spec))
    field = (field - field.mean()) / (field.std() + 1e-9)
    if kind == "fibre":  # bundles with a few white clefts
        field = np.tanh(field * 0.8) - 0.8 * (field < -2.2)
    elif kind == "wavy":
        field = np.tanh(field)
    field = (field - field.mean()) / (field.std() + 1e-9)
    return field.astype(np.float32)


def _rotated(tex: np.ndarray, k: int) -> np.ndarray:
    """The texture rotated by 45 degrees * k, still tileable (a shear for odd k)."""
    if k % 2 == 0:
        return np.rot90(tex, k // 2).copy()
    n = tex.shape[0]
    idx = np.arange(n)
    sheared = tex[(idx[:, None] + idx[None, :]) % n, idx[None, :]]
    return np.rot90(sheared, k // 2).copy()


# =========================================================================== renderer


def _tiled(tex: np.ndarray, y0: int, h: int, w: int, dy: int = 0, dx: int = 0) -> np.ndarray:
    """Rows y0..y0+h, columns 0..w of the periodic texture repeated over the plane."""
    n = tex.shape[0]
    rows = tex[(np.arange(y0, y0 + h) + dy) % n]
    rows = np.roll(rows, -dx, axis=1)
    reps = -(-w // n)
    return np.tile(rows, (1, reps))[:, :w]


class _Renderer:
    """Renders row bands of one synthetic slide (labels, then RGB)."""

    def __init__(self, width: int, height: int, mpp: float, seed: int, pen: bool):
        self.width, self.height, self.mpp, self.seed = width, height, mpp, seed
        rng = np.random.default_rng([seed, 0])
        self.cell_px = LAYOUT_UM / mpp  # level-0 px per layout cell
        gh = int(math.ceil(height / self.cell_px)) + 1
        gw = int(math.ceil(width / self.cell_px)) + 1
        self.label_grid = _layout(rng, gh, gw)
        # pen strokes draw from their own stream: the tissue is the same with or without
        self.pen_grid = (
            _pen_strokes(np.random.default_rng([seed, 4]), self.label_grid) if pen else np.zeros_like(self.label_grid)
        )
        self.has_pen = bool(self.pen_grid.any())
        # smooth displacement of the label map (layout cells), on a 2x coarser grid
        self.disp_step = 2.0  # layout cells per displacement-grid cell
        dshape = (int(gh / self.disp_step) + 3, int(gw / self.disp_step) + 3)
        amp = max(0.8, 5.0 / LAYOUT_UM)
        self.disp_y = _smooth_noise(rng, dshape, 1.5) * amp
        self.disp_x = _smooth_noise(rng, dshape, 1.5) * amp
        self.stain = _smooth_noise(rng, dshape, 25.0) * 0.10  # slow stain variation
        self.orient_w = _smooth_noise(rng, dshape, 20.0)
        self.objects = self._place(_objects(rng, self.label_grid, mpp))
        tex_rng = np.random.default_rng([seed, 1])
        fibre = _periodic_texture(tex_rng, "fibre")
        self.fibres = [_rotated(fibre, k) for k in range(4)]
        self.wavy = _periodic_texture(tex_rng, "wavy")
        self.granular = _periodic_texture(tex_rng, "granular")
        self.grain = _periodic_texture(tex_rng, "grain")
        self.ink = np.zeros((len(_PEN_INKS) + 1, 3), np.float32)
        self.ink[1:] = np.stack(list(_PEN_INKS.values()))
        t = np.array([_TISSUE[c] for c in range(8)], np.float32)
        self.eosin, self.hem_bg, self.tex_id, self.tex_amp = t[:, 0], t[:, 1], t[:, 2].astype(int), t[:, 3]
        self.obj_y = self.objects[:, 0]
        self.max_reach = float(self.objects[:, 2].max() + 2) if len(self.objects) else 0.0

    # -- geometry ----------------------------------------------------------------

    def _disp_cells(self, px: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Displacement-grid cells (of ``size`` along this axis) holding level-0 pixel
        coordinates, and the bilinear weight of the next cell."""
        f = px / (self.cell_px * self.disp_step)
        i = np.clip(np.floor(f).astype(int), 0, size - 2)
        return i, (f - i).astype(np.float32)

    def _smooth_at(self, field: np.ndarray, ys_px: np.ndarray, xs_px: np.ndarray) -> np.ndarray:
        """Bilinear value of a displacement-grid field at band rows x columns."""
        iy, wy = self._disp_cells(ys_px, field.shape[0])
        ix, wx = self._disp_cells(xs_px, field.shape[1])
        wy, wx = wy[:, None], wx[None, :]
        rows = field[iy] * (1 - wy) + field[iy + 1] * wy
        return rows[:, ix] * (1 - wx) + rows[:, ix + 1] * wx

    def _smooth_at_points(self, field: np.ndarray, y_px: np.ndarray, x_px: np.ndarray) -> np.ndarray:
        """Bilinear value of a displacement-grid field at single points (level-0 px)."""
        iy, wy = self._disp_cells(y_px, field.shape[0])
        ix, wx = self._disp_cells(x_px, field.shape[1])
        return ((field[iy, ix] * (1 - wx) + field[iy, ix + 1] * wx) * (1 - wy)
                + (field[iy + 1, ix] * (1 - wx) + field[iy + 1, ix + 1] * wx) * wy)

    def _place(self, objects: np.ndarray) -> np.ndarray:
        """Objects moved with the label map's displacement, so each lies in its class.

        :func:`_objects` places them in the undisplaced layout cells; the rendered
        labels take pixel p from layout position p / cell + d(p). An object meant for
        layout position q therefore belongs at the pixel p solving p + d(p) cell = q,
        found by fixed-point iteration (d is smooth and small). The few objects that
        still land on another class (where the displacement folds) are dropped.
        """
        if not len(objects):
            return objects
        qy, qx = objects[:, 0].astype(np.float64), objects[:, 1].astype(np.float64)
        y, x = qy.copy(), qx.copy()
        for _ in range(6):
            dy = self._smooth_at_points(self.disp_y, y, x)
            dx = self._smooth_at_points(self.disp_x, y, x)
            y, x = qy - dy * self.cell_px, qx - dx * self.cell_px
        placed = objects.copy()
        placed[:, 0], placed[:, 1] = y, x
        keep = self.labels_at(y, x) == placed[:, 8].astype(np.uint8)
        placed = placed[keep]
        return placed[np.argsort(placed[:, 0], kind="stable")]

    def labels_at(self, y_px: np.ndarray, x_px: np.ndarray) -> np.ndarray:
        """Tissue labels (without pen) of the pixels holding the points (level-0 px)."""
        py = np.floor(y_px).astype(np.float32)
        px = np.floor(x_px).astype(np.float32)
        gy = (py / self.cell_px - 0.5) + self._smooth_at_points(self.disp_y, py, px)
        gx = (px / self.cell_px - 0.5) + self._smooth_at_points(self.disp_x, py, px)
        return self._vote(self.label_grid, self._cells(gy, gx))

    def _cells(self, gy: np.ndarray, gx: np.ndarray):
        """Neighbour layout cells and bilinear weights of displaced layout coordinates."""
        gh, gw = self.label_grid.shape
        iy, ix = np.floor(gy), np.floor(gx)
        wy, wx = (gy - iy).astype(np.float32), (gx - ix).astype(np.float32)
        iy0 = np.clip(iy, 0, gh - 1).astype(np.int32)
        ix0 = np.clip(ix, 0, gw - 1).astype(np.int32)
        return iy0, np.minimum(iy0 + 1, gh - 1), ix0, np.minimum(ix0 + 1, gw - 1), wy, wx

    def _grid_index(self, y0: int, y1: int):
        """Displaced layout coordinates of band pixels: neighbour cells and weights."""
        ys = np.arange(y0, y1, dtype=np.float32)
        xs = np.arange(self.width, dtype=np.float32)
        gy = (ys[:, None] / self.cell_px - 0.5) + self._smooth_at(self.disp_y, ys, xs)
        gx = (xs[None, :] / self.cell_px - 0.5) + self._smooth_at(self.disp_x, ys, xs)
        return self._cells(gy, gx), ys, xs

    @staticmethod
    def _vote(grid: np.ndarray, where) -> np.ndarray:
        """Upsample a label grid with smooth (bilinear-contour) boundaries.

        Each pixel takes, among its four neighbouring cells, the label whose
        cells carry the largest total bilinear weight.
        """
        iy0, iy1, ix0, ix1, wy, wx = where
        l00, l01, l10, l11 = grid[iy0, ix0], grid[iy0, ix1], grid[iy1, ix0], grid[iy1, ix1]
        out = l00
        mixed = (l00 != l01) | (l00 != l10) | (l00 != l11)
        if not mixed.any():
            return out
        wy, wx = wy[mixed], wx[mixed]
        labs = [l00[mixed], l01[mixed], l10[mixed], l11[mixed]]
        ws = [(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx]
        best_lab, best = labs[0], None
        for i in range(4):
            score = ws[i].copy()
            for j in range(4):
                if j != i:
                    score += ws[j] * (labs[j] == labs[i])
            if best is None:
                best = score
            else:
                better = score > best
                best = np.where(better, score, best)
                best_lab = np.where(better, labs[i], best_lab)
        out[mixed] = best_lab
        return out

    def _band_labels(self, y0: int, y1: int):
        where, ys, xs = self._grid_index(y0, y1)
        tissue = self._vote(self.label_grid, where)
        pen = self._vote(self.pen_grid, where) if self.has_pen else None
        return tissue, pen, ys, xs

    def labels(self, y0: int, y1: int) -> np.ndarray:
        """Ground-truth labels of rows y0..y1 (pen ink is background)."""
        tissue, pen, _, _ = self._band_labels(y0, y1)
        if pen is not None:
            tissue[pen > 0] = BACKGROUND
        return tissue

    # -- pixels ------------------------------------------------------------------

    def rgb(self, y0: int, y1: int) -> np.ndarray:
        tissue_lab, pen_id, ys, xs = self._band_labels(y0, y1)
        h, w = tissue_lab.shape
        rng = np.random.default_rng([self.seed, 2, y0])

        # eosin: class amount x texture
        eos = self.eosin[tissue_lab]
        amp = self.tex_amp[tissue_lab]
        tid = self.tex_id[tissue_lab]
        tex = _tiled(self.grain, y0, h, w)
        fib = tid == 1
        if fib.any():  # blend four fibre orientations along a slow orientation field
            o = self._smooth_at(self.orient_w, ys, xs) * np.float32(np.pi)
            c, s = np.cos(o), np.sin(o)  # cos(2(o' - k pi/4)) for k = 0..3 is c, s, -c, -s
            acc = np.zeros((h, w), np.float32)
            wsum = np.zeros((h, w), np.float32)
            for ftex, cw in zip(self.fibres, (c, s, -c, -s)):
                wk = np.maximum(cw, 0)
                wk *= wk
                acc += wk * _tiled(ftex, y0, h, w)
                wsum += wk * wk
            tex = np.where(fib, acc / np.sqrt(np.maximum(wsum, 1e-6)), tex)
        for k, ttex in ((2, self.wavy), (3, self.granular)):
            sel = tid == k
            if sel.any():
                tex = np.where(sel, _tiled(ttex, y0, h, w), tex)
        stain = 1.0 + self._smooth_at(self.stain, ys, xs)
        eos = eos * (1.0 + 0.4 * amp * tex) * stain
        hem = self.hem_bg[tissue_lab] * (1.0 + 0.4 * amp * tex) * stain

        # stamped nuclei (haematoxylin) and red cells
        maps = np.zeros((2, h, w), np.float32)
        lo = np.searchsorted(self.obj_y, y0 - self.max_reach)
        hi = np.searchsorted(self.obj_y, y1 + self.max_reach)
        _stamp(maps, y0, self.objects[lo:hi])
        chrom = 1.0 + 0.15 * _tiled(self.grain, y0, h, w, 97, 211)
        inside = tissue_lab > 0
        hem = hem + maps[0] * chrom * inside * stain
        red = maps[1] * inside

        od = (
            eos[..., None] * _EOSIN
            + hem[..., None] * _HEMATOXYLIN
            + red[..., None] * (_RED_CELL * 1.9)
            + 0.035
        )
        if pen_id is not None and pen_id.any():
            ink = self.ink[pen_id] * (1.0 + 0.1 * _tiled(self.granular, y0, h, w))[..., None]
            od += ink * (pen_id > 0)[..., None]
        np.maximum(od, 0, out=od)
        np.negative(od, out=od)
        img = np.exp(od, out=od)
        img *= np.float32(250.0)
        img += rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(2.2)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)

    def band_rows(self):
        for y0 in range(0, self.height, _BAND_PX):
            yield y0, min(self.height, y0 + _BAND_PX)

    # -- associated images ------------------------------------------------------

    def label_image(self) -> np.ndarray:
        """A slide label: white paper with a barcode."""
        rng = np.random.default_rng([self.seed, 3])
        img = np.full((300, 300, 3), 245, np.uint8)
        bars = rng.random(60) < 0.5
        for i, bar in enumerate(bars):
            if bar:
                img[40:160, 30 + 4 * i : 33 + 4 * i] = 20
        img[200:215, 40:260] = 60
        img[235:250, 40:200] = 60
        return img

    def macro_image(self) -> np.ndarray:
        """A low-magnification photo of the glass: slide area plus the paper label."""
        colours = np.array([[235, 235, 235], [190, 120, 180], [170, 100, 170], [230, 160, 200],
                            [215, 170, 205], [240, 200, 220], [210, 80, 90], [220, 180, 200]], np.uint8)
        grid = self.label_grid
        scale = max(1, int(math.ceil(max(grid.shape) / 600)))
        small = colours[grid[::scale, ::scale] % 8]
        small[self.pen_grid[::scale, ::scale] > 0] = (60, 90, 60)
        h = small.shape[0]
        paper = np.full((h, max(8, h // 2), 3), 245, np.uint8)
        return np.concatenate([paper, small], axis=1)


# =========================================================================== public API


def _check_args(width: int, height: int, mpp: float) -> None:
    if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer))):
        raise InputError(f"slide size must be integers, got {width!r}x{height!r}")
    if width < 256 or height < 256:
        raise InputError(f"slide size {width}x{height}: both sides must be at least 256 px")
    if width * height > 200_000 * 200_000:
        raise InputError(f"slide size {width}x{height}: too large")
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and 0.05 <= mpp <= 20):
        raise InputError(f"mpp {mpp!r}: must be a number between 0.05 and 20 microns per pixel")


def slide_outputs(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """The slide and mask paths :func:`synthesize_slide` writes for ``name``."""
    out_dir = Path(out_dir)
    return out_dir / f"{name}.svs", out_dir / f"{name}.mask.tif"


def is_synthesized(out_dir: str | Path, name: str) -> bool:
    """Whether ``name``'s slide and mask both exist, so :func:`synthesize_slide` keeps them."""
    return all(path.exists() for path in slide_outputs(out_dir, name))


def synthesize_slide(
    out_dir: str | Path,
    name: str,
    *,
    width: int = 12000,
    height: int = 10000,
    mpp: float = 0.5,
    seed: int = 0,
    pen: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> tuple[Path, Path]:
    """Write ``out_dir/<name>.svs`` (Aperio layout) and ``out_dir/<name>.mask.tif``.

    The mask is a pyramidal uint8 label TIFF (palette from :data:`BIOPSY_CLASSES`,
    resolution tags with ``mpp``). The same arguments give the same label TIFF
    bytes and the same decoded slide pixels. When both files exist they are kept
    unless ``overwrite``. Returns ``(slide_path, mask_path)``.
    """
    _check_args(width, height, mpp)
    out_dir = Path(out_dir)
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"{name!r}: not a valid slide name")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the folder ({exc.strerror})") from None
    slide_path, mask_path = slide_outputs(out_dir, name)
    if is_synthesized(out_dir, name) and not overwrite:
        return slide_path, mask_path

    renderer = _Renderer(int(width), int(height), float(mpp), int(seed), pen)
    rows = list(renderer.band_rows())
    colours = np.array([c for _, c in BIOPSY_CLASSES], np.uint8)
    try:
        write_pyramidal_tiff(
            mask_path,
            width=width,
            height=height,
            bands=ordered_map(lambda r: renderer.labels(*r), rows, threads=_THREADS, ahead=2 * _THREADS),
            band_height=_BAND_PX,
            mpp=mpp,
            colormap=colours,
        )
        bar = tqdm(rows, desc=name, unit="band", disable=not progress, leave=False)
        write_aperio_svs(
            slide_path,
            width=width,
            height=height,
            bands=ordered_map(lambda r: renderer.rgb(*r), bar, threads=_THREADS, ahead=2 * _THREADS),
            band_height=_BAND_PX,
            mpp=mpp,
            app_mag=round(10 / mpp) if mpp <= 1 else 10 / mpp,
            label=renderer.label_image(),
            macro=renderer.macro_image(),
        )
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write ({exc.strerror or exc})") from None
    return slide_path, mask_path


def synthesize(
    out_dir: str | Path,
    *,
    n: int = 3,
    width: int = 12000,
    height: int = 10000,
    mpp: float = 0.5,
    seed: int = 0,
    pen: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> list[tuple[Path, Path]]:
    """Write ``n`` slides ``synth_000``, ``synth_001``... (see :func:`synthesize_slide`).

    Slide ``i`` uses a seed derived from ``(seed, i)``; existing complete
    outputs are kept unless ``overwrite``.
    """
    if n < 1:
        raise InputError(f"n={n}: must be at least 1")
    _check_args(width, height, mpp)
    out = []
    for i in range(n):
        slide_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        out.append(
            synthesize_slide(out_dir, f"synth_{i:03d}", width=width, height=height, mpp=mpp,
                             seed=slide_seed, pen=pen, overwrite=overwrite, progress=progress)
        )
    return out
