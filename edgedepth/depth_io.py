"""Image and depth file I/O shared by the data sets, evaluation and the runtime's outputs.

Depth on disk: 16-bit PNG in millimetres (0 = invalid, saturates at 65.535 m), float32 ``.npy``
in metres, or PFM (Middlebury/ETH3D disparity). Every writer writes through
:func:`edgedepth.atomic.atomic_path`, so a crash never leaves a half-written file. Every reader raises
``FileNotFoundError``/``ValueError`` naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .atomic import PathLike, atomic_path

#: metres per unit of a 16-bit depth PNG written by :func:`write_depth_png` unless told otherwise.
DEPTH_PNG_UNIT = 1e-3
#: the PNG tEXt key holding that unit (metres, as a decimal number).
PNG_UNIT_KEY = "edgedepth.unit_m"


def _pil():
    from PIL import Image  # Pillow is a runtime dependency; imported lazily to keep startup cheap

    return Image


def _open(path: PathLike, max_pixels: int | None = None):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    Image = _pil()
    try:
        img = Image.open(path)  # reads the header only
        too_big = max_pixels is not None and img.width * img.height > max_pixels
        if not too_big:
            img.load()
    except Exception as err:  # Pillow raises several types for truncated/corrupt files
        raise ValueError(f"cannot decode image {path}: {err}") from err
    if too_big:
        img.close()
        raise ValueError(f"image {path} is {img.width}x{img.height}, over the {max_pixels} pixels allowed "
                         "(it was not decoded)")
    return img


def read_image(path: PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as HWC uint8 RGB, turned upright as its EXIF orientation says (as every
    viewer shows it; a phone's portrait photo is stored sideways). ``max_pixels``: refuse larger
    images (ValueError) from the header, before decoding them."""
    from PIL import ImageOps

    img = _open(path, max_pixels)
    if img.mode not in ("RGB", "L", "RGBA", "P", "LA"):
        if img.mode in ("I;16", "I;16B", "I", "F"):
            raise ValueError(f"{path} holds a {img.mode} (depth-like) image, expected an 8-bit colour image")
    img = ImageOps.exif_transpose(img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_png16(path: PathLike) -> np.ndarray:
    """Read a 16-bit single-channel PNG as HW uint16 (raw values)."""
    img = _open(path)
    if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise ValueError(f"{path} is a {img.mode} image, expected a 16-bit single-channel PNG")
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"{path} has shape {arr.shape}, expected a single-channel image")
    if arr.dtype != np.uint16:
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"{path} holds values outside the 16-bit range")
        arr = arr.astype(np.uint16)
    return arr


def write_image(path: PathLike, image: np.ndarray) -> None:
    """Write an HWC uint8 RGB (or HW uint8 grey) image; format from the suffix (PNG preferred)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be HxWx3 or HxW uint8, got {image.shape} {image.dtype}")
    Image = _pil()
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=_format(path))


def _format(path: PathLike) -> str:
    ext = Path(path).suffix.lower()
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        ext, "PNG"
    )


def write_png16(path: PathLike, values: np.ndarray, text: Optional[dict[str, str]] = None) -> None:
    """Write HW uint16 values as a 16-bit grey PNG (``text``: key/value tEXt chunks to carry along)."""
    values = np.asarray(values)
    if values.dtype != np.uint16 or values.ndim != 2:
        raise ValueError(f"values must be HxW uint16, got {values.shape} {values.dtype}")
    Image = _pil()
    info = None
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(values)).save(tmp, format="PNG", pnginfo=info)


def depth_to_png16(depth: np.ndarray, unit: float = DEPTH_PNG_UNIT) -> tuple[np.ndarray, int]:
    """Quantise HW metres to uint16 in ``unit`` metres (round to nearest). <= 0 or NaN -> 0, and
    depth beyond 65535 units (65.535 m in mm) -> 0 = invalid rather than a wrong saturated value.
    Returns (values, number of valid pixels that did not fit)."""
    depth = as_depth_map(depth, "depth")
    q = np.rint(np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0) / unit)
    too_far = q > 65535
    q[too_far | (q < 0)] = 0
    return q.astype(np.uint16), int(too_far.sum())


def write_depth_png(path: PathLike, depth: np.ndarray, unit: float = DEPTH_PNG_UNIT, *, warn: bool = True) -> int:
    """Write HW float depth in metres as a 16-bit PNG of ``unit`` metres (default millimetres); the
    unit is recorded in the file (tEXt ``edgedepth.unit_m``), which :func:`read_depth_png` reads.
    Pixels beyond 65535 units are written as 0 (invalid), with a warning unless ``warn=False`` (a
    caller that reports them itself); returns their count."""
    if not (np.isfinite(unit) and unit > 0):
        raise ValueError(f"unit must be > 0 metres, got {unit}")
    values, dropped = depth_to_png16(depth, unit)
    if dropped and warn:
        import warnings

        warnings.warn(f"{path}: {dropped} pixels beyond {65535 * unit:g} m do not fit a 16-bit PNG "
                      f"of {unit:g} m units and were written as 0 (invalid); use .npy to keep them",
                      stacklevel=2)
    write_png16(path, values, text={PNG_UNIT_KEY: repr(float(unit))})
    return dropped


def read_depth_png(path: PathLike, unit: Optional[float] = None) -> np.ndarray:
    """Read a 16-bit depth PNG as HW float32 metres (raw value x ``unit``; 0 stays 0 = invalid).
    ``unit`` None: the unit the file records (:func:`write_depth_png`), else millimetres."""
    values = read_png16(path)
    if unit is None:
        unit = png_depth_unit(path)
    return values.astype(np.float32) * np.float32(unit)


def png_depth_unit(path: PathLike) -> float:
    """Metres per unit a 16-bit depth PNG records (``edgedepth.unit_m``); millimetres when it records none."""
    with _open(path) as img:
        recorded = img.info.get(PNG_UNIT_KEY)
    try:
        unit = float(recorded) if recorded is not None else DEPTH_PNG_UNIT
    except ValueError:
        raise ValueError(f"{path}: {PNG_UNIT_KEY} is {recorded!r}, not a number of metres") from None
    if not (np.isfinite(unit) and unit > 0):
        raise ValueError(f"{path}: {PNG_UNIT_KEY} must be > 0 metres, got {recorded!r}")
    return unit


def write_npy(path: PathLike, array: np.ndarray) -> None:
    """Write one array as ``.npy`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)


def read_npy(path: PathLike) -> np.ndarray:
    """Read a ``.npy`` array (no pickles), naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"array file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"cannot read array file {path}: {err}") from err


def read_depth(path: PathLike, unit: Optional[float] = None) -> np.ndarray:
    """Read HW float32 metres from ``.npy`` (metres) or a 16-bit ``.png`` (``unit`` metres; None: the
    unit the file records, else millimetres)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        arr = read_npy(path)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{path} holds {arr.shape} {arr.dtype}, expected an HxW float depth map")
        return arr.astype(np.float32)
    if path.suffix.lower() == ".png":
        return read_depth_png(path, unit)
    if path.suffix.lower() == ".pfm":
        return read_pfm(path)
    raise ValueError(f"unsupported depth file {path}: expected .npy, 16-bit .png or .pfm")


def read_pfm(path: PathLike) -> np.ndarray:
    """Read a PFM file as HW (or HWC) float32, top row first (PFM stores bottom row first)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PFM file not found: {path}")
    data = path.read_bytes()
    try:
        header, rest = _pfm_header(data)
        kind, width, height, scale = header
    except ValueError as err:
        raise ValueError(f"{path} is not a valid PFM file: {err}") from err
    channels = 3 if kind == b"PF" else 1
    endian = "<" if scale < 0 else ">"
    count = width * height * channels
    if len(rest) < 4 * count:
        raise ValueError(f"{path} is truncated: {len(rest)} bytes of pixel data, expected {4 * count}")
    arr = np.frombuffer(rest, dtype=endian + "f4", count=count).astype(np.float32)
    arr = arr.reshape(height, width, channels)[::-1]
    return np.ascontiguousarray(arr[..., 0] if channels == 1 else arr)


def _pfm_header(data: bytes):
    # The header is three whitespace-separated ASCII tokens lines: kind, "W H", scale.
    tokens, pos = [], 0
    while len(tokens) < 4:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise ValueError("header ends early")
        tokens.append(data[start:pos])
    pos += 1  # exactly one whitespace byte separates the header from the pixels
    if tokens[0] not in (b"PF", b"Pf"):
        raise ValueError(f"magic {tokens[0]!r}, expected b'PF' or b'Pf'")
    width, height, scale = int(tokens[1]), int(tokens[2]), float(tokens[3])
    if width <= 0 or height <= 0 or scale == 0:
        raise ValueError(f"bad size {width}x{height} or scale {scale}")
    return (tokens[0], width, height, scale), data[pos:]


def write_pfm(path: PathLike, array: np.ndarray) -> None:
    """Write HW or HWx3 float32 as little-endian PFM (bottom row first, as the format says)."""
    array = np.asarray(array, dtype=np.float32)
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"array must be HxW or HxWx3, got {array.shape}")
    kind = b"PF" if array.ndim == 3 else b"Pf"
    h, w = array.shape[:2]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(kind + b"\n" + f"{w} {h}\n-1.0\n".encode())
            f.write(np.ascontiguousarray(array[::-1]).astype("<f4").tobytes())


def as_depth_map(depth, name: str) -> np.ndarray:
    """``depth`` as an HW float array in metres (a leading axis of 1 is dropped); ValueError for
    another shape, TypeError for a non-float dtype, both naming ``name``."""
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[0] == 1:
        depth = depth[0]
    if depth.ndim != 2:
        raise ValueError(f"{name} must be an HxW depth map, got shape {depth.shape}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise TypeError(f"{name} must be a float array (metres), got {depth.dtype}")
    return depth


# Turbo colour map (Mikhailov 2019), sampled at 9 control points and linearly interpolated:
# close enough for looking at depth, and small enough to keep in source.
_TURBO = np.array(
    [
        [48, 18, 59], [65, 69, 171], [57, 130, 234], [27, 190, 214], [52, 235, 144],
        [164, 252, 60], [237, 208, 35], [250, 137, 31], [207, 63, 10], [122, 4, 3],
    ],
    dtype=np.float32,
)


def colorize(values: np.ndarray, vmin: float, vmax: float, invalid: np.ndarray | None = None) -> np.ndarray:
    """Map HW values to HWx3 uint8 turbo colours over [vmin, vmax]; ``invalid`` pixels are black."""
    values = np.asarray(values, dtype=np.float32)
    span = max(float(vmax) - float(vmin), 1e-12)
    x = np.clip((np.nan_to_num(values, nan=vmin) - vmin) / span, 0.0, 1.0) * (len(_TURBO) - 1)
    i0 = np.minimum(x.astype(np.int32), len(_TURBO) - 2)
    f = (x - i0)[..., None]
    rgb = _TURBO[i0] * (1 - f) + _TURBO[i0 + 1] * f
    out = np.rint(rgb).astype(np.uint8)
    if invalid is not None:
        out[invalid] = 0
    return out


def colorize_depth(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Colourise HW metres as HWx3 uint8 RGB: near = red, far = blue, by inverse depth
    (so near structure gets most of the colour range); depth <= 0 or non-finite is black.
    ``vmin``/``vmax`` in metres default to the 2nd/98th percentile of the valid depth; pass both to
    keep the colours of a sequence comparable (:func:`depth_legend` draws their key)."""
    depth = as_depth_map(depth, "depth").astype(np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    lo = float(np.percentile(depth[valid], 2)) if vmin is None else float(vmin)
    hi = float(np.percentile(depth[valid], 98)) if vmax is None else float(vmax)
    if not (0 < lo <= hi):
        raise ValueError(f"colour range must satisfy 0 < vmin <= vmax, got vmin={lo} vmax={hi}")
    inv = np.zeros_like(depth)
    inv[valid] = 1.0 / depth[valid]
    return colorize(inv, 1.0 / hi, 1.0 / lo if lo < hi else 1.0 / lo + 1e-6, invalid=~valid)


def check_depth_range(vmin: float, vmax: float) -> None:
    """ValueError unless 0 < vmin < vmax, both finite (metres): a fixed colour range."""
    if not (np.isfinite(vmin) and np.isfinite(vmax) and 0 < vmin < vmax):
        raise ValueError(f"the colour range must satisfy 0 < vmin < vmax metres, got vmin={vmin} vmax={vmax}")


def _ticks(vmin: float, vmax: float) -> list[float]:
    """Round depths (1, 2, 5 x 10^k metres) inside [vmin, vmax], the ends included."""
    inside = [m * 10.0 ** e for e in range(-2, 4) for m in (1, 2, 5) if vmin < m * 10.0 ** e < vmax]
    return [vmin, *inside, vmax]


def depth_legend(width: int, vmin: float, vmax: float) -> np.ndarray:
    """The key of :func:`colorize_depth` over [vmin, vmax] metres: an (h, width, 3) uint8 RGB strip, a
    colour bar from vmin (left, red) to vmax (right, blue) on the same inverse-depth scale, with tick
    labels in metres below it."""
    from PIL import ImageDraw, ImageFont

    check_depth_range(vmin, vmax)
    if width < 8:
        raise ValueError(f"a legend needs a width of >= 8 pixels, got {width}")
    # Text in proportion to the frame, so it stays legible under a 4K video (Pillow >= 10.1 scales
    # its default font; older ones draw their 11 px bitmap font).
    size = max(11, width // 64)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:
        font = ImageFont.load_default()
    bar_h = max(8, width // 80)
    text_h = int(font.getbbox("0123456789 m")[3]) + 2
    x = (np.arange(width) + 0.5) / width
    inv = 1.0 / vmin + x * (1.0 / vmax - 1.0 / vmin)  # the colour scale is linear in inverse depth
    strip = np.zeros((bar_h + text_h + 6, width, 3), np.uint8)
    strip[2 : 2 + bar_h] = colorize_depth(np.broadcast_to(1.0 / inv, (bar_h, width)).astype(np.float32), vmin, vmax)
    img = _pil().fromarray(strip)
    draw = ImageDraw.Draw(img)
    taken: list[tuple[int, int]] = []  # label spans drawn so far: the ends first, then what fits
    ticks = _ticks(vmin, vmax)
    for depth in [ticks[0], ticks[-1], *ticks[1:-1]]:
        label = f"{depth:g} m"
        pos = (1.0 / depth - 1.0 / vmin) / (1.0 / vmax - 1.0 / vmin) * (width - 1)
        span = int(draw.textlength(label, font=font)) + 1
        left = int(min(max(pos - span / 2, 0), width - span))
        if any(left < end + 4 and start < left + span + 4 for start, end in taken):
            continue
        taken.append((left, left + span))
        draw.line([(int(pos), 2 + bar_h), (int(pos), 4 + bar_h)], fill=(255, 255, 255))
        draw.text((left, 4 + bar_h), label, fill=(255, 255, 255), font=font)
    return np.asarray(img).copy()


def write_colorized_depth(path: PathLike, depth: np.ndarray, vmin: float | None = None,
                          vmax: float | None = None) -> None:
    """Write :func:`colorize_depth` of HW metres as an RGB PNG."""
    write_image(path, colorize_depth(depth, vmin, vmax))
