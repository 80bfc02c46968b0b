"""The image grid (a class per column) and the 2-D scatter are real PNGs, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from layerpar.generation import write_grid, write_scatter
from layerpar.generation.figures import grid_columns, tile

PNG = b"\x89PNG\r\n\x1a\n"


def test_tile_places_images_row_major_with_gaps() -> None:
    images = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    canvas = tile(images, columns=2)
    assert canvas.shape == (6, 6, 1)  # 2 rows × (2 + 1 gap), 2 columns × (2 + 1)
    assert canvas[0, 0, 0] == 0.0 and canvas[0, 3, 0] == 0.5 and canvas[3, 0, 0] == 1.0
    assert canvas[2, :, 0].eq(0).all()  # the gap row
    assert canvas[3:5, 3:5].eq(0).all()  # the empty cell


def test_one_column_per_class_else_square() -> None:
    assert grid_columns(100, 10) == 10
    assert grid_columns(5, 10) == 3
    assert grid_columns(64, None) == 8


def test_grid_and_scatter_are_pngs_and_leave_no_temporary_files(tmp_path: Path) -> None:
    grid = write_grid(torch.rand(20, 1, 8, 8) * 2 - 1, tmp_path / "g" / "grid.png", title="t", classes=10)
    scatter = write_scatter(torch.randn(50, 2), torch.randn(50, 2), tmp_path / "s.png", title="t")
    for path in (grid, scatter):
        assert path.read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["grid.png", "s.png"]
