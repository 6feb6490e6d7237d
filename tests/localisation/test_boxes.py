"""Boxes in the frame cache's pixels: hand cases, and rendered SynthAV objects through the cache's own crop."""

import numpy as np
import pytest

from assets.caches.video_frames import FrameParams, resize_center_crop
from assets.localisation.boxes import box_in_crop, box_mask
from data.synthav import render
from data.synthav.world import COLOURS, ClipSpec, Event


def test_box_in_crop_by_hand():
    # 160x120 -> Resize(224): 298x224 (int(224 * 160 / 120)), crop left int(round(74 / 2)) = 37, top 0
    scale_x, scale_y = 298 / 160, 224 / 120
    assert box_in_crop((40, 30, 100, 90), (160, 120), 224) == pytest.approx(
        (40 * scale_x - 37, 30 * scale_y, 100 * scale_x - 37, 90 * scale_y))
    assert box_in_crop((40, 30, 100, 90), (160, 120), FrameParams()) == box_in_crop((40, 30, 100, 90), (160, 120), 224)
    assert box_in_crop((0, 0, 40, 10), (160, 120), 224) == pytest.approx((0.0, 0.0, 40 * scale_x - 37, 10 * scale_y))
    assert box_in_crop((0, 0, 10, 10), (160, 120), 224) is None  # left of the crop
    assert box_in_crop((150, 0, 160, 120), (160, 120), 224) is None  # right of it
    # portrait 200x500 -> 224x560, crop top int(round(336 / 2)) = 168; a full-frame box is the whole crop
    assert box_in_crop((0, 0, 200, 500), (200, 500), 224) == pytest.approx((0, 0, 224, 224))
    assert box_in_crop((0, 200, 200, 300), (200, 500), 224) == pytest.approx((0, 224 - 168, 224, 336 - 168))
    # a square picture only scales: 256 -> 224
    assert box_in_crop((32, 64, 128, 256), (256, 256), 224) == pytest.approx((28, 56, 112, 224))


def test_box_mask_takes_pixels_whose_centre_is_inside():
    mask = box_mask((1, 2, 3, 4), 5)
    assert mask.shape == (5, 5) and mask.sum() == 4 and mask[2:4, 1:3].all()
    fractional = box_mask((0.6, 0.0, 2.4, 1.0), 4)  # column centres 0.5 (out), 1.5 (in), 2.5 (out)
    assert np.argwhere(fractional).tolist() == [[0, 1]]
    assert box_mask((0, 0, 224, 224), 224).all()
    assert not box_mask((3.2, 0, 3.4, 4), 4).any()  # between two pixel centres


def _bbox(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def _object_pixels(frame: np.ndarray, spec: ClipSpec, colour: int) -> np.ndarray:
    """Pixels of the cached frame at least half covered by the object: the frame and the bare
    background both go through the frame cache's resize + crop, and each pixel's share of the
    object colour is read off the difference."""
    height, width = frame.shape[:2]
    got = resize_center_crop(frame, 224).astype(np.float64)
    bare = resize_center_crop(render.background(spec.scene, height, width), 224).astype(np.float64)
    contrast = np.asarray(COLOURS[colour][1], np.float64) - bare
    share = ((got - bare) * contrast).sum(axis=2) / (contrast**2).sum(axis=2)
    return share > 0.5


@pytest.mark.parametrize("cls,size,x,drift,t", [
    (0, 1, 0.5, 0.0, 1.0),  # a big triangle: its apex is one pixel wide
    (3, 0, 0.3, 0.0, 1.0),  # a small diamond
    (6, 1, 0.26, -0.04, 4.0),  # a big ring drifted past the left edge, beyond the crop
    (11, 1, 0.74, 0.04, 3.0),  # a zigzag drifting right, partly cropped away
])
def test_video_box_matches_the_rendered_object_after_the_frame_cache_crop(cls, size, x, drift, t):
    spec = ClipSpec(scene=2, events=(Event(cls, colour=4, size=size, onset=0.0, duration=5.0, x=x, drift=drift),))
    frame = render.render_frames(spec, 4, 120, 160)[int(t * 4)]
    box = render.drawn_boxes(spec, np.array([t]), 120, 160)[0]
    cropped = box_in_crop(box, (160, 120), 224)
    coloured = _object_pixels(frame, spec, colour=4)
    assert coloured.any() and cropped is not None
    assert np.abs(_bbox(coloured) - _bbox(box_mask(cropped, 224))).max() <= 1


def test_picture_box_matches_the_rendered_objects_after_the_frame_cache_crop():
    events = (Event(7, colour=1, size=1, onset=0.0, duration=4.0, x=0.3, drift=0.0),
              Event(7, colour=1, size=0, onset=5.0, duration=4.0, x=0.7, drift=0.0))
    spec = ClipSpec(scene=0, events=events)
    picture = render.render_picture(spec, 256, 256)
    cropped = box_in_crop(render.picture_box(spec, 256, 256), (256, 256), 224)
    assert np.abs(_bbox(_object_pixels(picture, spec, colour=1)) - _bbox(box_mask(cropped, 224))).max() <= 1
