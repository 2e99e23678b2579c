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


# ----- text and audio grids (issue 25) ---------------------------------------------------------

def test_plan_takes_text_and_audio_knobs_with_the_seed_fixed():
    from aigc_studio.params import AudioParams, TextParams

    text = grid.plan(TextParams(seed=-1), "temperature", [0.2, 1.0], "top_k", [5])
    assert [label for label, _ in text.cells] == ["temperature=0.2, top_k=5", "temperature=1.0, top_k=5"]
    assert len({cell.seed for _, cell in text.cells}) == 1
    audio = grid.plan(AudioParams(seed=2), "speed", [0.5, 2.0])
    assert [cell.speed for _, cell in audio.cells] == [0.5, 2.0] and {c.seed for _, c in audio.cells} == {2}


def test_cell_divergence_is_where_each_cell_leaves_the_others():
    assert grid.cell_divergence([[1, 2, 3], [1, 2, 4], [1, 2, 3]]) == [2, 2, 2]
    assert grid.cell_divergence([[1, 2, 3], [1, 2, 3]]) == [None, None]
    assert grid.cell_divergence([[1, 2], [1, 2, 3], [9]]) == [0, 0, 0]
    assert grid.cell_divergence([[1, 2], [1, 2, 3]]) == [2, 2]  # one ended where the other went on
    assert grid.cell_divergence([[5]]) == [None]


def test_check_axes_names_the_knobs_the_model_reads_and_bounds_the_cells():
    with pytest.raises(ParamError) as error:
        grid.check_axes("voice", ["speed", "seed"], "speed", "guidance", 16, 4)
    assert str(error.value).startswith("y_knob") and "voice does not use guidance" in str(error.value)
    assert "speed, seed" in str(error.value)
    with pytest.raises(ParamError, match="x_values.*at most 16"):
        grid.check_axes("lm", ["top_k"], "top_k", None, 16, 17)
    grid.check_axes("lm", ["top_k", "seed"], "top_k", "seed", 16, 16)  # allowed: no error


def test_text_export_has_every_cell_with_its_recipe():
    import csv
    import io
    import json

    from aigc_studio.params import TextParams

    plan = grid.plan(TextParams(seed=1), "top_k", [1, 2])
    cells = [{"row": 0, "column": i, "label": label, "text": f"a, \"b\"\n{i}", "tokens": 3, "tokens_per_s": 9.5,
              "mean_logprob": -0.5, "first_difference": 1, "recipe": {"params": {"top_k": p.top_k}}}
             for i, (label, p) in enumerate(plan.cells)]
    document, table = grid.text_export(plan, cells)
    assert json.loads(document)["cells"] == cells and json.loads(document)["x_knob"] == "top_k"
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [r["text"] for r in rows] == [c["text"] for c in cells]  # commas, quotes and newlines survive
    assert [json.loads(r["recipe"]) for r in rows] == [c["recipe"] for c in cells]
