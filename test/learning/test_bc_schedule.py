"""The BC learning-rate schedule: any run length train-bc accepts steps through it (short runs crashed)."""
import math

import pytest
import torch

from deploy.errors import ConfigError
from deploy.learning.bc import MIN_STEPS, BCConfig, one_cycle


@pytest.mark.parametrize("steps", [MIN_STEPS, 5, 10, 20, 39, 41, 100, 3000])
def test_every_accepted_run_length_warms_up_peaks_and_decays(steps):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=1e-3)
    schedule = one_cycle(optimizer, 1e-3, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert all(math.isfinite(r) and r > 0 for r in rates)
    peak = max(rates)
    assert 0.9e-3 <= peak <= 1e-3
    assert rates[0] < peak and rates[-1] < peak


def test_a_run_too_short_for_the_schedule_is_refused_naming_steps():
    with pytest.raises(ConfigError, match=r"steps 3: at least 4"):
        BCConfig(steps=3)
