import pytest
import torch

from micronbert.kernels import block_swap_mask, generate_swap_mask, random_swap_mask


@pytest.mark.parametrize("grid", [(28, 28), (8, 8), (7, 13), (1, 5)])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_random_mask_exact_count(grid, ratio):
    m = random_swap_mask(6, grid, ratio, torch.Generator().manual_seed(0))
    assert m.dtype == torch.bool and m.shape == (6, grid[0] * grid[1])
    assert (m.sum(1) == round(ratio * grid[0] * grid[1])).all()


@pytest.mark.parametrize("grid", [(28, 28), (14, 14), (8, 8), (10, 17)])
def test_block_mask_ratio_and_bound(grid):
    n = grid[0] * grid[1]
    target = round(0.5 * n)
    m = block_swap_mask(64, grid, 0.5, torch.Generator().manual_seed(1))
    assert (m.sum(1) == target).all(), m.sum(1)  # BEiT's blocks, completed by smaller ones


@pytest.mark.parametrize("grid,ratio", [((4, 4), 0.5), ((4, 4), 0.1), ((4, 4), 1.0), ((1, 5), 0.4),
                                        ((3, 3), 0.5), ((2, 7), 0.3), ((5, 4), 0.75)])
def test_block_mask_on_small_grids_swaps_the_target_in_every_sample(grid, ratio):
    """4 x 4 at 0.5 once swapped nothing in 19.8% of samples (few BEiT shapes fit: a 3 x 3
    block passes the target of 8, a side of 4 the grid), a 1-row grid never (issue 24)."""
    target = round(ratio * grid[0] * grid[1])
    m = block_swap_mask(512, grid, ratio, torch.Generator().manual_seed(2))
    assert (m.sum(1) == target).all() and target >= 1
    assert len({tuple(s.tolist()) for s in m}) > (1 if target < grid[0] * grid[1] else 0)


def test_small_grid_blocks_are_blocks():
    """Completed 4 x 4 masks stay blocky: more swapped neighbours than a random subset."""
    grid, g = (4, 4), torch.Generator().manual_seed(6)
    assert neighbours(block_swap_mask(256, grid, 0.5, g), grid) > \
        neighbours(random_swap_mask(256, grid, 0.5, g), grid) + 0.5


def test_masks_reproducible_and_seed_dependent():
    for kind in ("block", "random"):
        a = generate_swap_mask(kind, 8, (14, 14), 0.5, torch.Generator().manual_seed(3))
        b = generate_swap_mask(kind, 8, (14, 14), 0.5, torch.Generator().manual_seed(3))
        c = generate_swap_mask(kind, 8, (14, 14), 0.5, torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_block_mask_is_made_of_rectangles():
    """With the area and aspect pinned (16 patches, square), one block is a 4x4 square."""
    grid = (10, 12)
    m = block_swap_mask(32, grid, 16 / 120, torch.Generator().manual_seed(5), min_patches=16,
                        min_aspect=1.0).view(-1, *grid)
    tops = set()
    for s in m:
        rows, cols = s.any(1).nonzero(), s.any(0).nonzero()
        box = s[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.shape == (4, 4) and box.all() and s.sum() == 16
        tops.add((rows.min().item(), cols.min().item()))
    assert len(tops) > 5  # placed at random


def neighbours(m, grid):
    """Mean number of swapped 4-neighbours of a swapped patch."""
    m = m.view(-1, *grid).float()
    nb = torch.zeros_like(m)
    nb[:, 1:] += m[:, :-1]
    nb[:, :-1] += m[:, 1:]
    nb[:, :, 1:] += m[:, :, :-1]
    nb[:, :, :-1] += m[:, :, 1:]
    return (nb * m).sum() / m.sum()


def test_block_masks_have_larger_connected_regions_than_random():
    grid = (14, 14)
    g = torch.Generator().manual_seed(0)
    assert neighbours(block_swap_mask(16, grid, 0.5, g), grid) > \
        neighbours(random_swap_mask(16, grid, 0.5, g), grid) + 0.5


def test_a_token_count_given_as_the_grid_is_refused_at_once():
    """block_swap_mask(B, 784) means a 784 x 784 grid: refused in no time, naming grid=28."""
    import time
    t = time.perf_counter()
    for make in (block_swap_mask, random_swap_mask):
        with pytest.raises(ValueError, match="grid=28 for 784 patches"):
            make(2, 784)
    with pytest.raises(ValueError, match="not the number of patches"):
        generate_swap_mask("block", 2, (1000, 1000))
    assert time.perf_counter() - t < 1.0
    assert random_swap_mask(1, (256, 256)).shape == (1, 65536)  # the largest grid still taken


def test_a_mask_of_another_grid_names_the_image_grid():
    from micronbert.kernels import blockwise_swap_patches
    f = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"block_swap_mask\(2, \(4, 4\)\)"):
        blockwise_swap_patches(f, f, block_swap_mask(2, 8), 8)


def test_bad_arguments():
    with pytest.raises(ValueError, match="ratio"):
        random_swap_mask(2, 8, 1.5)
    with pytest.raises(ValueError, match="kind"):
        generate_swap_mask("blocks", 2, 8)
