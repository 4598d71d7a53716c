"""Drawing detections: boxes with class names and scores, image grids, PNG files.

Pure NumPy drawing (no Pillow or OpenCV dependency) with a built-in 5×7 bitmap font; PNG
encoding and image decoding go through TensorFlow (`tf.io`). Each class has its own colour;
a label is text on a filled box of that colour, in black or white, whichever contrasts, so
it reads on light and dark images alike.

    from kerasdet import visualize
    image = visualize.read_image("street.jpg")
    drawn = visualize.draw_detections(image, model.predict(image[None]), class_names=names,
                                      score_threshold=0.5)
    visualize.save_png("street_detections.png", drawn)
    visualize.save_png("grid.png", visualize.make_grid([drawn, drawn2, drawn3]))

Boxes are `[y1, x1, y2, x2]` pixels with pixel-edge coordinates (the package convention): a
box covering rows `r0..r1` has `y1 = r0`, `y2 = r1 + 1`, and its outline is drawn on the
pixels just inside that box.
"""

from __future__ import annotations

import math
import os

import numpy as np

# 20 distinct colours (RGB); class k is drawn in PALETTE[k % 20].
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)

# 5×7 glyphs, rows top to bottom ('#' = ink). Lower case is drawn as upper case; characters
# without a glyph are drawn as '?'.
_GLYPHS = {
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    " ": "..... ..... ..... ..... ..... ..... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    ";": "..... .##.. .##.. ..... .##.. ..#.. .#...",
    "-": "..... ..... ..... ##### ..... ..... .....",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "=": "..... ..... ##### ..... ##### ..... .....",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "'": "..#.. ..#.. .#... ..... ..... ..... .....",
    "!": "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    "#": ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
}
_FONT = {c: np.array([[ch == "#" for ch in row] for row in rows.split()], bool) for c, rows in _GLYPHS.items()}
GLYPH_HEIGHT, GLYPH_WIDTH = 7, 5


def class_color(class_id: int) -> tuple:
    """The RGB colour of a class id (cycles through `PALETTE`)."""
    return PALETTE[int(class_id) % len(PALETTE)]


def contrasting_color(color) -> tuple:
    """Black or white, whichever reads better on `color` (by luma)."""
    r, g, b = (float(c) for c in color[:3])
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def render_text(text: str, scale: int = 1) -> np.ndarray:
    """The bitmap of `text`: bool `[7·scale, (6·len − 1)·scale]` (1-pixel letter spacing)."""
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"`scale` must be a positive int, got {scale!r}")
    if not text:
        return np.zeros([GLYPH_HEIGHT * scale, 0], bool)
    columns = []
    for i, char in enumerate(str(text).upper()):
        if i:
            columns.append(np.zeros([GLYPH_HEIGHT, 1], bool))
        columns.append(_FONT.get(char, _FONT["?"]))
    bitmap = np.concatenate(columns, axis=1)
    return np.repeat(np.repeat(bitmap, scale, axis=0), scale, axis=1)


def _as_uint8_rgb(image, name="image") -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"`{name}` must be [height, width, 3] (or 1 / 4 channels), got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    if array.dtype != np.uint8:
        array = np.clip(np.round(array.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def _fill(image, top, left, bottom, right, color):
    """Fills rows [top, bottom) × columns [left, right), clipped to the image."""
    h, w = image.shape[:2]
    top, left = max(int(top), 0), max(int(left), 0)
    bottom, right = min(int(bottom), h), min(int(right), w)
    if top < bottom and left < right:
        image[top:bottom, left:right] = color


def draw_label(image, text, top, left, color, *, scale=1) -> None:
    """Draws `text` in place on a filled box of `color` whose top-left corner is
    `(top, left)`, in black or white (whichever contrasts)."""
    bitmap = render_text(text, scale)
    pad = scale
    height, width = bitmap.shape[0] + 2 * pad, bitmap.shape[1] + 2 * pad
    _fill(image, top, left, top + height, left + width, color)
    ink = contrasting_color(color)
    h, w = image.shape[:2]
    ys, xs = np.nonzero(bitmap)
    ys, xs = ys + top + pad, xs + left + pad
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    image[ys[keep], xs[keep]] = ink


def label_height(scale: int = 1) -> int:
    """Height in pixels of a label box drawn with `scale`."""
    return (GLYPH_HEIGHT + 2) * scale


def _default_thickness(shape) -> int:
    return max(2, round(min(shape[:2]) / 250))


def _default_scale(shape) -> int:
    return max(1, round(min(shape[:2]) / 320))


def draw_boxes(
    image,
    boxes,
    classes=None,
    scores=None,
    *,
    class_names=None,
    colors=None,
    thickness: int | None = None,
    font_scale: int | None = None,
    labels: bool = True,
    outline: bool = True,
) -> np.ndarray:
    """Draws boxes (and labels) on a copy of `image`.

    Args:
        image: `[H, W, 3]` (or `[H, W]` / 1 / 4 channels), uint8 or float 0–255.
        boxes: `[N, 4]` yxyx pixels.
        classes: optional `[N]` class ids (colour and name of each box; default all 0).
        scores: optional `[N]` scores, shown as `name 0.87`.
        class_names: optional names indexed by class id (default: the id).
        colors: optional `[C]` RGB colours by class id (default `PALETTE`).
        thickness: outline width in pixels (default from the image size, at least 2).
        font_scale: integer size of the 5×7 font (default from the image size).
        labels: draw the labels (`False`: boxes only).
        outline: edge each box with a 1-pixel line just outside it, in black or white
            (whichever contrasts with the box colour), so light colours show on white
            images and dark ones on black images.

    Returns:
        uint8 `[H, W, 3]`: the image with the boxes; `image` itself is not modified.
    """
    canvas = _as_uint8_rgb(image).copy()
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros([0, 4])
    n = len(boxes)
    classes = np.zeros([n], np.int64) if classes is None else np.asarray(classes).reshape(-1).astype(np.int64)
    if len(classes) != n:
        raise ValueError(f"`classes` must have one entry per box ({n}), got {len(classes)}")
    if scores is not None:
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(scores) != n:
            raise ValueError(f"`scores` must have one entry per box ({n}), got {len(scores)}")
    thickness = _default_thickness(canvas.shape) if thickness is None else int(thickness)
    if thickness < 1:
        raise ValueError(f"`thickness` must be a positive int, got {thickness!r}")
    scale = _default_scale(canvas.shape) if font_scale is None else font_scale
    h, w = canvas.shape[:2]

    pending = []
    for i in range(n):
        y1, x1, y2, x2 = (int(round(v)) for v in boxes[i])
        if y2 <= y1 or x2 <= x1:
            continue
        k = int(classes[i])
        color = tuple(colors[k]) if colors is not None else class_color(k)
        t = min(thickness, (y2 - y1 + 1) // 2, (x2 - x1 + 1) // 2) or 1
        if outline:
            edge = contrasting_color(color)
            _fill(canvas, y1 - 1, x1 - 1, y1, x2 + 1, edge)  # above
            _fill(canvas, y2, x1 - 1, y2 + 1, x2 + 1, edge)  # below
            _fill(canvas, y1 - 1, x1 - 1, y2 + 1, x1, edge)  # left of
            _fill(canvas, y1 - 1, x2, y2 + 1, x2 + 1, edge)  # right of
        _fill(canvas, y1, x1, y1 + t, x2, color)  # top
        _fill(canvas, y2 - t, x1, y2, x2, color)  # bottom
        _fill(canvas, y1, x1, y2, x1 + t, color)  # left
        _fill(canvas, y1, x2 - t, y2, x2, color)  # right
        if labels:
            name = class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)
            pending.append((y1, x1, name if scores is None else f"{name} {scores[i]:.2f}", color))
    # Labels after all boxes, so that no box line crosses a label.
    lh = label_height(scale)
    for y1, x1, text, color in pending:
        # Above the box when there is room, else just inside its top edge.
        top = y1 - lh if y1 - lh >= 0 else max(y1, 0)
        left = min(max(x1, 0), max(w - render_text(text, scale).shape[1] - 2 * scale, 0))
        if top < h:
            draw_label(canvas, text, top, left, color, scale=scale)
    return canvas


def _take(detections, key, index):
    value = np.asarray(detections[key])
    return value[index] if value.ndim >= (3 if key == "boxes" else 2) else value


def draw_detections(image, detections: dict, *, class_names=None, score_threshold: float = 0.0,
                    index: int = 0, **kwargs) -> np.ndarray:
    """Draws a kerasdet detections dict on a copy of `image`.

    Args:
        image: `[H, W, 3]`, the image the boxes are in pixels of.
        detections: `{"boxes", "scores", "classes"}` and optionally `"num_detections"`,
            batched (`[B, N, 4]`, the model's output; image `index` is drawn) or not.
        class_names: names by class id.
        score_threshold: boxes scoring below it are not drawn.
        **kwargs: passed to `draw_boxes` (`colors`, `thickness`, `font_scale`, `labels`).

    Returns:
        uint8 `[H, W, 3]`.
    """
    missing = [k for k in ("boxes", "scores", "classes") if k not in detections]
    if missing:
        raise ValueError(f"`detections` must be a kerasdet detections dict, missing keys {missing}")
    boxes = _take(detections, "boxes", index).reshape(-1, 4)
    scores = _take(detections, "scores", index).reshape(-1)
    classes = _take(detections, "classes", index).reshape(-1)
    count = len(scores)
    if "num_detections" in detections:
        num = np.asarray(detections["num_detections"]).reshape(-1)
        count = int(num[index] if num.size > 1 else num[0])
    keep = (np.arange(len(scores)) < count) & (scores >= score_threshold) & (classes >= 0)
    # Lower scores first, so the best boxes end on top.
    order = np.argsort(scores[keep], kind="stable")
    return draw_boxes(
        image, boxes[keep][order], classes[keep][order], scores[keep][order], class_names=class_names, **kwargs
    )


def make_grid(images, *, columns: int | None = None, padding: int = 4, background=255) -> np.ndarray:
    """Tiles images into one, row by row.

    Args:
        images: a sequence of `[H, W, 3]` images (sizes may differ: each sits at the
            top-left of a cell of the largest size).
        columns: images per row; default `ceil(sqrt(len(images)))`.
        padding: pixels between cells and around the grid.
        background: grey level (or RGB) of the padding and empty cells.

    Returns:
        uint8 `[rows·Hc + (rows + 1)·padding, columns·Wc + (columns + 1)·padding, 3]`, where
        `Hc, Wc` is the largest image size and `rows = ceil(len / columns)`.
    """
    images = [_as_uint8_rgb(image, f"images[{i}]") for i, image in enumerate(images)]
    if not images:
        raise ValueError("`images` must hold at least one image, got none")
    columns = math.ceil(math.sqrt(len(images))) if columns is None else columns
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"`columns` must be a positive int, got {columns!r}")
    columns = min(int(columns), len(images))
    rows = math.ceil(len(images) / columns)
    cell_h = max(image.shape[0] for image in images)
    cell_w = max(image.shape[1] for image in images)
    grid = np.empty([rows * cell_h + (rows + 1) * padding, columns * cell_w + (columns + 1) * padding, 3], np.uint8)
    grid[:] = np.asarray(background, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = padding + r * (cell_h + padding), padding + c * (cell_w + padding)
        grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    return grid


def save_png(path, image) -> str:
    """Writes `image` (`[H, W, 3]`, uint8 or 0–255 floats) as a PNG file; returns the path."""
    import tensorflow as tf

    data = tf.io.encode_png(_as_uint8_rgb(image)).numpy()
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def read_image(path) -> np.ndarray:
    """Decodes a PNG, JPEG, GIF (first frame) or BMP file into uint8 `[H, W, 3]` RGB."""
    import tensorflow as tf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path!r} does not exist")
    with open(path, "rb") as f:
        data = f.read()
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, ValueError):
        raise ValueError(f"cannot decode image file {path!r}: expected PNG, JPEG, GIF or BMP") from None
    return image.numpy()
