"""The scripted operator with the real push expert: takes over when the policy drifts, commands the expert's
chunks while it has authority, hands back after the policy agrees again for long enough."""
import numpy as np
import pytest
from deploy.policies.expert import PushExpert

from deploy.control.chunks import Chunk
from deploy.errors import ConfigError
from deploy.sensing.observation import Observation
from deploy.teleop.authority import AuthorityMux
from deploy.teleop.scripted import ScriptedOperator, ScriptedOperatorConfig, mean_tcp_distance_m

DOWN = np.array([1.0, 0.0, 0.0, 0.0])


def observation(t_s, tcp=(0.40, -0.05, 0.20), cube=(0.45, -0.10, 0.02)):
    values = {"ee_pose": np.concatenate([tcp, DOWN]), "gripper_width": np.array([0.0]),
              "cube_pose": np.concatenate([cube, [0.0, 0.0, 0.0, 1.0]])}
    return Observation(t_s, values, {k: t_s for k in values})


def line_chunk(stamp_s, start, velocity, dt_s=0.05, horizon=16):
    """TCP moving at constant velocity from `start` at `stamp_s` (so any time's position is known exactly)."""
    times_s = dt_s * np.arange(1, horizon + 1)
    actions = np.tile(np.concatenate([start, DOWN, [0.0]]), (horizon, 1))
    actions[:, :3] += np.outer(times_s, velocity)
    return Chunk(stamp_s, times_s, actions)


def test_mean_tcp_distance_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    start, velocity = rng.uniform(-0.1, 0.1, 3), rng.uniform(-0.2, 0.2, 3)
    reference = line_chunk(10.0, start, velocity)
    chunk = line_chunk(10.013, start + velocity * 0.013, velocity, dt_s=0.04, horizon=10)
    chunk.actions[:, :3] += rng.normal(0.0, 0.01, (10, 3))
    brute = np.mean([np.linalg.norm(chunk.actions[i, :3] - (start + velocity * (0.013 + chunk.times_s[i])))
                     for i in range(5)])  # the first half, against the exact line
    assert mean_tcp_distance_m(chunk, reference, 0.5) == pytest.approx(brute, rel=1e-9)
    assert mean_tcp_distance_m(reference, reference, 1.0) == pytest.approx(0.0, abs=1e-12)


def proposal(operator, obs, offset_m, stamp_s):
    """What a policy proposes: the expert's chunk from `obs`, shifted sideways by offset_m."""
    chunk = operator.expert_chunk(obs)
    actions = chunk.actions.copy()
    actions[:, 1] += offset_m
    return Chunk(stamp_s, chunk.times_s, actions)


def test_takes_over_on_drift_commands_the_expert_and_hands_back_after_agreement():
    operator = ScriptedOperator(ScriptedOperatorConfig(takeover_distance_m=0.03, handback_distance_m=0.015,
                                                       handback_agree_s=0.5, chunk_rate_hz=10.0))
    assert isinstance(operator.expert, PushExpert) and operator.state_keys == ("ee_pose", "gripper_width", "cube_pose")
    mux = AuthorityMux(operator)

    obs = observation(1.0)
    assert mux.policy_chunk(proposal(operator, obs, 0.02, 1.0), 1.05, obs)  # 2 cm off: still the policy's
    assert not mux.policy_chunk(proposal(operator, obs, 0.04, 1.2), 1.25, obs)  # 4 cm off: dropped at once
    tick = mux.tick(1.26, observation(1.26))
    assert tick.human and tick.switched
    # the operator's action IS the expert's chunk from the current state, stamped with its observation time
    expected = PushExpert().predict_chunk(observation(1.26))
    assert tick.chunk.stamp_s == 1.26 and np.allclose(tick.chunk.actions, expected)
    assert mux.tick(1.30, observation(1.30)).chunk is None  # 10 Hz
    assert mux.tick(1.37, observation(1.37)).chunk is not None

    # agreement must last 0.5 s without a break: a 2 cm proposal (between the thresholds) restarts the wait
    for stamp_s, offset_m in ((1.4, 0.0), (1.6, 0.0), (1.8, 0.02), (2.0, 0.005), (2.2, 0.0), (2.4, 0.0)):
        assert not mux.policy_chunk(proposal(operator, observation(stamp_s), offset_m, stamp_s), stamp_s + 0.05,
                                    observation(stamp_s))
        assert mux.tick(stamp_s + 0.06, observation(stamp_s + 0.06)).human
    assert not mux.policy_chunk(proposal(operator, observation(2.6), 0.0, 2.6), 2.65, observation(2.6))
    tick = mux.tick(2.66, observation(2.66))  # 0.6 s since 2.05: hands back
    assert not tick.human and tick.switched and tick.chunk is None
    assert operator.last_distance_m == pytest.approx(0.0, abs=1e-9)
    assert not mux.policy_chunk(proposal(operator, observation(2.6), 0.0, 2.6), 2.7, observation(2.6))  # stale
    assert mux.policy_chunk(proposal(operator, observation(2.7), 0.0, 2.7), 2.75, observation(2.7))


def test_scripted_config_refuses_inconsistent_thresholds():
    with pytest.raises(ConfigError, match="handback_distance_m"):
        ScriptedOperatorConfig(takeover_distance_m=0.01, handback_distance_m=0.02)
    with pytest.raises(ConfigError, match="unknown policy 'no_such_expert'"):
        ScriptedOperator(ScriptedOperatorConfig(expert="no_such_expert"))
