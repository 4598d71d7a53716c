"""kerasdet.visualize: boxes at exact pixels, labels, grids, PNG files."""

import numpy as np
import pytest
import tensorflow as tf

from kerasdet import visualize


def test_box_outline_is_drawn_just_inside_the_box():
    image = np.full([60, 80, 3], 128, np.uint8)
    out = visualize.draw_boxes(image, [[10, 20, 50, 60]], [3], thickness=2, labels=False)
    color = np.array(visualize.class_color(3), np.uint8)
    edge = np.array(visualize.contrasting_color(color), np.uint8)
    # Rows 10-11 and 48-49, columns 20-21 and 58-59 carry the class colour...
    for y, x in [(10, 40), (11, 40), (48, 40), (49, 40), (30, 20), (30, 21), (30, 58), (30, 59), (10, 20), (49, 59)]:
        np.testing.assert_array_equal(out[y, x], color, err_msg=(y, x))
    # ...the 1-pixel contrasting edge lies just outside...
    for y, x in [(9, 40), (50, 40), (30, 19), (30, 60)]:
        np.testing.assert_array_equal(out[y, x], edge, err_msg=(y, x))
    # ...and the inside and the rest of the image are untouched.
    for y, x in [(12, 40), (47, 40), (30, 22), (30, 57), (30, 40), (8, 40), (30, 61), (0, 0)]:
        np.testing.assert_array_equal(out[y, x], image[y, x], err_msg=(y, x))
    assert out is not image and (image == 128).all()  # the input is not modified


def test_boxes_are_clipped_at_the_image_border():
    out = visualize.draw_boxes(np.zeros([20, 20, 3]), [[-5, -5, 30, 10]], thickness=1, labels=False, outline=False)
    color = np.array(visualize.class_color(0), np.uint8)
    np.testing.assert_array_equal(out[5, 9], color)  # right edge, column 9
    np.testing.assert_array_equal(out[5, 5], 0)
    assert out.dtype == np.uint8 and out.shape == (20, 20, 3)


def test_label_is_text_on_a_filled_box_in_a_contrasting_colour():
    image = np.zeros([80, 120, 3], np.uint8)
    out = visualize.draw_boxes(image, [[40, 10, 70, 100]], [2], [0.875], class_names=["a", "b", "square"],
                               thickness=1, font_scale=1)
    color = np.array(visualize.class_color(2), np.uint8)  # yellow: black text
    text = visualize.render_text("square 0.88", 1)
    top = 40 - visualize.label_height(1)
    label = out[top : top + visualize.label_height(1), 10 : 10 + text.shape[1] + 2]
    ink = np.all(label == visualize.contrasting_color(color), axis=-1)
    np.testing.assert_array_equal(ink[1:-1, 1:-1], text)  # exactly the glyphs
    np.testing.assert_array_equal(label[~ink], np.broadcast_to(color, label[~ink].shape))


def test_contrasting_colour_and_palette():
    assert visualize.contrasting_color((255, 255, 200)) == (0, 0, 0)
    assert visualize.contrasting_color((0, 0, 128)) == (255, 255, 255)
    assert visualize.class_color(0) == visualize.class_color(len(visualize.PALETTE))
    assert len(set(visualize.PALETTE)) == len(visualize.PALETTE)


def test_render_text_size_and_unknown_characters():
    assert visualize.render_text("ab1", 2).shape == (14, (3 * 6 - 1) * 2)
    np.testing.assert_array_equal(visualize.render_text("é"), visualize.render_text("?"))
    np.testing.assert_array_equal(visualize.render_text("a"), visualize.render_text("A"))


def test_draw_detections_uses_num_detections_and_threshold():
    image = np.zeros([40, 40, 3], np.uint8)
    detections = {
        "boxes": np.array([[[5, 5, 15, 15], [20, 20, 30, 30], [1, 1, 39, 39]]], np.float32),
        "scores": np.array([[0.9, 0.3, 0.8]], np.float32),
        "classes": np.array([[1, 1, 4]], np.int32),
        "num_detections": np.array([2], np.int32),
    }
    out = visualize.draw_detections(image, detections, score_threshold=0.5, labels=False, thickness=1, outline=False)
    np.testing.assert_array_equal(out[5, 10], visualize.class_color(1))  # drawn: score 0.9
    np.testing.assert_array_equal(out[20, 25], 0)  # below the threshold
    np.testing.assert_array_equal(out[1, 20], 0)  # past num_detections


def test_grid_shape_and_placement():
    images = [np.full([10, 20, 3], i * 40, np.uint8) for i in range(5)]
    images[1] = np.full([16, 8], 200, np.uint8)  # grayscale, another size
    grid = visualize.make_grid(images, columns=3, padding=2, background=255)
    assert grid.shape == (2 * 16 + 3 * 2, 3 * 20 + 4 * 2, 3)
    np.testing.assert_array_equal(grid[2, 2], 0)  # image 0 at the top-left cell
    np.testing.assert_array_equal(grid[2 + 15, 2 + 22 + 7], 200)  # image 1, bottom-right pixel
    np.testing.assert_array_equal(grid[2 + 18, 2 + 22 + 19], 160)  # image 4: row 1, column 1
    np.testing.assert_array_equal(grid[0, 0], 255)
    np.testing.assert_array_equal(grid[-3, -3], 255)  # the empty sixth cell
    assert visualize.make_grid(images).shape[:2] == (2 * 16 + 3 * 4, 3 * 20 + 4 * 4)  # ceil(sqrt(5)) = 3
    with pytest.raises(ValueError, match="at least one image"):
        visualize.make_grid([])


def test_png_is_written_and_decodes_to_the_same_pixels(tmp_path):
    image = visualize.draw_boxes(np.random.default_rng(0).integers(0, 255, [32, 48, 3]).astype(np.uint8),
                                 [[4, 4, 28, 40]], [1], [0.5], class_names=["x", "dog"])
    path = visualize.save_png(tmp_path / "out" / "drawn.png", image)
    decoded = tf.io.decode_png(tf.io.read_file(str(path))).numpy()
    np.testing.assert_array_equal(decoded, image)
    np.testing.assert_array_equal(visualize.read_image(path), image)


def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        visualize.read_image(tmp_path / "nothing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot decode image file"):
        visualize.read_image(tmp_path / "bad.png")


def test_draw_boxes_validates_its_inputs():
    with pytest.raises(ValueError, match="one entry per box"):
        visualize.draw_boxes(np.zeros([8, 8, 3]), [[0, 0, 4, 4]], classes=[0, 1])
    with pytest.raises(ValueError, match=r"must be \[height, width, 3\]"):
        visualize.draw_boxes(np.zeros([8, 8, 2]), [])
