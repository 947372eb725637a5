"""The local forecast's block loop: read a block, submit its model calls, blend their results in order, hand back rows.

With a pool of worker processes (workers.ChipPool) the parent reads the next block's
window and builds its calls while the workers compute the current block's, so the workers do not
wait for reads, blending or writes. At most two blocks are open at a time (the one being blended
and the one being read), which plan.bytes_per_pixel counts in the memory budget.

Results are blended in call order, the band above's carry first (blocks.BlockBlender),
so the output does not depend on how many processes computed it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
import xarray as xr

from .blocks import BlockBlender, BlockInputs, BlockResult, CallLayout, Carry, read_block
from .chips import ChipSettings
from .plan import ForecastPlan


def stream_blocks(
    cube: xr.Dataset,
    plan: ForecastPlan,
    runner,
    *,
    layout: CallLayout,
    settings: ChipSettings,
    on_chips: Callable[[int], object] = lambda n: None,
) -> Iterator[BlockResult]:
    """Every block of `plan`, stripe by stripe and top to bottom, computed by `runner` (ChipPool or InProcess)."""
    blocks = plan.tiles.all_blocks()
    steps: deque[tuple] = deque()  # ("begin", i) | ("calls", i, chips, tickets) | ("end", i), in submission order
    opened: dict[int, BlockInputs] = {}
    state: dict[str, BlockBlender | Carry | None] = {"blender": None, "carry": None}
    finished = -1
    ahead = 1 if runner.parallel else 0  # blocks read before the previous one is finished
    ranges = layout.member_ranges(settings.members)

    def advance() -> BlockResult | None:
        nonlocal finished
        kind, index, *rest = steps.popleft()
        if kind == "begin":
            carry = state["carry"] if blocks[index].band > 0 else None
            state["blender"] = BlockBlender(plan, opened[index], carry)
            return None
        blender = state["blender"]
        if kind == "calls":
            chips, tickets = rest
            parts = [runner.result(t) for t in tickets]
            blender.add(chips, parts[0] if len(parts) == 1 else np.concatenate(parts))
            on_chips(len(chips))
            return None
        result, state["carry"] = blender.finish()
        state["blender"] = None
        del opened[index]
        finished = index
        return result

    for index, block in enumerate(blocks):
        while finished < index - 1 - ahead:
            if (result := advance()) is not None:
                yield result
        opened[index] = inputs = read_block(cube, plan, block)
        steps.append(("begin", index))
        for chips, batch in inputs.groups(plan, layout):
            while runner.in_flight >= runner.capacity and steps:
                if (result := advance()) is not None:
                    yield result
            tickets = [runner.submit(batch, conditioned=plan.conditioned, settings=settings, member_range=r)
                       for r in ranges]
            steps.append(("calls", index, chips, tickets))
        steps.append(("end", index))
    while steps:
        if (result := advance()) is not None:
            yield result
