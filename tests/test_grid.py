"""X/Y grids: cell params, labels, fixed seeds, and the labelled grid image."""

from __future__ import annotations

import pytest
from PIL import Image

from aigc_studio import grid
from aigc_studio.params import ImageParams, ParamError


def test_cells_are_row_major_with_matching_labels():
    plan = grid.plan(ImageParams(seed=5), "steps", [4, 8, 16], "guidance", [1, 7])
    assert plan.x_labels == ["steps=4", "steps=8", "steps=16"]
    assert plan.y_labels == ["guidance=1.0", "guidance=7.0"]
    assert [label for label, _ in plan.cells] == [
        "steps=4, guidance=1.0", "steps=8, guidance=1.0", "steps=16, guidance=1.0",
        "steps=4, guidance=7.0", "steps=8, guidance=7.0", "steps=16, guidance=7.0",
    ]
    for label, cell in plan.cells:
        assert label == f"steps={cell.steps}, guidance={cell.guidance}"


def test_seed_is_fixed_across_cells_unless_it_is_an_axis():
    plan = grid.plan(ImageParams(seed=-1), "steps", [4, 8])
    seeds = {cell.seed for _, cell in plan.cells}
    assert len(seeds) == 1 and seeds.pop() >= 0  # a random seed is drawn once for the whole grid
    by_seed = grid.plan(ImageParams(seed=1), "seed", [1, 2, 3])
    assert [cell.seed for _, cell in by_seed.cells] == [1, 2, 3]


@pytest.mark.parametrize("x, y, field", [
    ([], None, "x_values"),
    (list(range(1, 8)), None, "x_values"),
    ([4], [], "y_values"),
])
def test_bad_axes_name_the_field(x, y, field):
    with pytest.raises(ParamError) as error:
        grid.plan(ImageParams(), "steps", x, "guidance" if y is not None else None, y)
    assert field in str(error.value)


def test_a_random_seed_on_the_seed_axis_is_drawn_and_labelled():
    plan = grid.plan(ImageParams(seed=7), "seed", [-1, 3])
    drawn = plan.cells[0][1].seed
    assert 0 <= drawn and plan.x_labels == [f"seed={drawn}", "seed=3"] and plan.cells[0][0] == f"seed={drawn}"


def test_batch_size_is_not_an_axis():
    with pytest.raises(ParamError) as error:
        grid.plan(ImageParams(), "steps", [4], "batch_size", [1, 2])
    assert str(error.value).startswith("y_knob: batch_size cannot be an axis")


def test_the_grid_has_a_pixel_budget():
    plan = grid.plan(ImageParams(width=768, height=768), "steps", [1, 2, 3, 4, 5, 6], "guidance", [1, 2, 3, 4, 5, 6])
    assert len(plan.cells) == 36  # 21.2 megapixels: allowed
    with pytest.raises(ParamError) as error:
        grid.plan(ImageParams(width=1024, height=1024), "steps", [1, 2, 3, 4, 5, 6], "guidance", [1, 2, 3, 4, 5, 6])
    assert str(error.value).startswith("width/height: the grid's 36 cells make 37.7 megapixels, at most 24")


def test_out_of_range_cell_values_name_the_knob():
    with pytest.raises(ParamError, match="steps"):
        grid.plan(ImageParams(), "steps", [4, 500])


def test_same_knob_on_both_axes_is_refused():
    with pytest.raises(ParamError, match="y_knob"):
        grid.plan(ImageParams(), "steps", [4], "steps", [8])


def test_rendered_grid_places_each_cell_under_its_label():
    plan = grid.plan(ImageParams(), "steps", [4, 8], "guidance", [1, 3])
    colours = ["red", "green", "blue", "yellow"]
    cells = [Image.new("RGB", (32, 32), c) for c in colours]
    picture = grid.render(cells, plan)
    gap = grid.GAP
    left = picture.width - 2 * 32 - 3 * gap
    assert picture.height == grid.LABEL_HEIGHT + 2 * 32 + 3 * gap
    for index, colour in enumerate(colours):
        row, column = divmod(index, 2)
        x, y = grid.cell_origin(left, column, row, 32, 32)
        assert picture.getpixel((x + 16, y + 16)) == Image.new("RGB", (1, 1), colour).getpixel((0, 0))
    # a gap separates neighbouring cells, so two white pictures never merge into one
    x, y = grid.cell_origin(left, 0, 0, 32, 32)
    assert picture.getpixel((x + 32 + gap // 2, y + 16)) == grid.GAP_COLOUR
    assert picture.getpixel((x + 16, y + 32 + gap // 2)) == grid.GAP_COLOUR


def test_grid_labels_are_centred_over_their_columns():
    plan = grid.plan(ImageParams(), "steps", [4, 8])
    picture = grid.render([Image.new("RGB", (64, 64), "white")] * 2, plan).convert("L")
    left = picture.width - 2 * 64 - 3 * grid.GAP
    for column in range(2):
        x, _ = grid.cell_origin(left, column, 0, 64, 64)
        ink = [px for px in range(x, x + 64) for py in range(grid.LABEL_HEIGHT) if picture.getpixel((px, py)) < 128]
        assert ink, "no label drawn"
        middle = (min(ink) + max(ink)) / 2
        assert abs(middle - (x + 32)) <= 3  # centred on the cell, not left-aligned
