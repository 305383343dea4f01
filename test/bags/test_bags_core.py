"""deploy.bags without ROS processes: topics and type checks, bag IO with rosbags (bad files named), stamps in
raw CDR, the replay schedule, the lockstep observation sets, and the replay-test metrics and report."""
import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from bag_helpers import STORE, image, joint_state, write_bag
from deploy.bags import lockstep, metrics
from deploy.bags.report import controller_configs, evaluate, write
from deploy.bags.schedule import LOOP_GAP_NS, ReplaySchedule, passes, timeline
from deploy.bags.store import (BagError, BagReader, BagWriter, has_stamp, stamp_ns, type_hash,
                               with_stamp_shifted)
from deploy.bags.thresholds import Thresholds
from deploy.bags.topics import (PRESETS, QosSpec, adapted_qos, check_topics, expected_type, playback_qos,
                                policy_inputs, read_policy_metadata, replayed_patterns, selected, topic_patterns)
from deploy.control.chunks import Chunk, ChunkExecutorConfig
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError
from deploy.graph.description import config_dir
from deploy.policies.base import PolicyMetadata
from deploy.robots.mujoco_model import MujocoRobotModel

T0 = 1_700_000_000 * 10**9
CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


# --- topics ------------------------------------------------------------------------------------------------
def test_policy_inputs_follow_the_policy_nodes_wiring():
    meta = PolicyMetadata("cartesian", 0.05, 16, image_keys=("wrist", "front"), state_keys=("ee_pose", "gripper_width"))
    inputs = policy_inputs(meta)
    assert inputs.topics == {"/cameras/wrist/image_raw": "sensor_msgs/msg/Image",
                             "/cameras/front/image_raw": "sensor_msgs/msg/Image",
                             "/proprio/ee_pose": "geometry_msgs/msg/PoseStamped",
                             "/proprio/joint_states": "sensor_msgs/msg/JointState"}
    assert inputs.reference_topic == "/proprio/ee_pose" and inputs.chunk_topic == "/policy/chunk"
    assert inputs.images == ("/cameras/wrist/image_raw", "/cameras/front/image_raw")
    assert inputs.after_reference == ("/proprio/joint_states",)  # subscribed after the pose: needs the guard
    joints = policy_inputs(PolicyMetadata("cartesian", 0.05, 16, state_keys=("joint_positions", "gripper_width")))
    assert joints.reference_topic == "/proprio/joint_states" and joints.after_reference == ()


@pytest.mark.parametrize("checkpoint", ["push_demo", "push_weak"])
def test_a_replay_publishes_what_its_checkpoint_reads_beyond_the_preset(checkpoint):
    inputs = policy_inputs(read_policy_metadata(CHECKPOINTS / checkpoint))
    assert "/sim/cube_pose" in inputs.topics and not selected("/sim/cube_pose", PRESETS["observations"])
    patterns = replayed_patterns("", "observations", inputs)
    assert all(selected(topic, patterns) for topic in inputs.topics)
    assert not selected("/policy/chunk", patterns)  # the bag's chunks would collide with the live policy's
    assert replayed_patterns("", "observations", None) == PRESETS["observations"]
    assert replayed_patterns("", "", inputs) == ()  # no preset: every topic of the bag
    assert replayed_patterns("/proprio/ee_pose", "observations", inputs) == ("/proprio/ee_pose",)  # as asked


def test_topic_types_presets_and_bad_names():
    assert expected_type("/cameras/left/image_raw") == "sensor_msgs/msg/Image"
    assert expected_type("/policy/chunk") == "trajectory_msgs/msg/MultiDOFJointTrajectory"
    assert expected_type("/somebody/else") is None
    assert "/cameras/*/image_raw" in topic_patterns(preset="observations")
    with pytest.raises(ConfigError, match="unknown topic preset 'all'"):
        topic_patterns(preset="all")
    with pytest.raises(ConfigError, match="topic 'proprio/ee_pose' must be an absolute name"):
        topic_patterns(topics="/a,proprio/ee_pose")


def test_check_topics_names_the_missing_or_mistyped_topic_and_the_expected_type():
    required = {"/proprio/joint_states": "sensor_msgs/msg/JointState"}
    with pytest.raises(ConfigError, match=r"bag 'b' has no topic /proprio/joint_states \(policy 'p' needs "
                                          r"sensor_msgs/msg/JointState\)"):
        check_topics("b", {}, required, "policy 'p'")
    with pytest.raises(ConfigError, match="topic /proprio/joint_states has type std_msgs/msg/String, expected "
                                          "sensor_msgs/msg/JointState"):
        check_topics("b", {"/proprio/joint_states": "std_msgs/msg/String"}, required, "policy 'p'")


def test_read_policy_metadata_needs_no_torch_and_names_a_bad_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        read_policy_metadata(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"metadata": {"action_space": "polar", "dt_s": 0.1,
                                                                   "horizon": 4}}))
    with pytest.raises(ConfigError, match="config.json: no valid policy metadata"):
        read_policy_metadata(tmp_path)


def test_adapted_qos_is_compatible_with_every_offer():
    offers = [QosSpec(reliable=True, depth=5), QosSpec(reliable=False, depth=1)]
    assert adapted_qos(offers) == QosSpec(reliable=False, transient_local=False, depth=10)
    latched = [QosSpec(reliable=True, transient_local=True, depth=1)]
    assert adapted_qos(latched, 1) == QosSpec(reliable=True, transient_local=True, depth=1)
    assert adapted_qos([]).reliable is False  # unknown offers: best effort matches everything
    assert playback_qos(latched) == QosSpec(reliable=True, transient_local=True, depth=10)
    assert playback_qos([]) == QosSpec(reliable=True, transient_local=False)  # as `ros2 bag play`: all subscribers


# --- bag IO ------------------------------------------------------------------------------------------------
def test_written_bag_reads_back_with_rosbags_types_qos_counts_and_stamps(tmp_path):
    msgs = [(T0 + i * 10_000_000, STORE.serialize_cdr(joint_state(T0 + i * 5_000_000), "sensor_msgs/msg/JointState"))
            for i in range(20)]
    with BagWriter(tmp_path / "bag") as bag:
        bag.add_topic("/proprio/joint_states", "sensor_msgs/msg/JointState", [QosSpec(reliable=False, depth=5)])
        for log_ns, data in msgs:
            bag.write("/proprio/joint_states", log_ns, data)
    with Reader(tmp_path / "bag") as reader:  # rosbags' own reader, not ours
        (conn,) = reader.connections
        assert (conn.topic, conn.msgtype, conn.msgcount) == ("/proprio/joint_states", "sensor_msgs/msg/JointState", 20)
        assert conn.digest == type_hash("sensor_msgs/msg/JointState")
        assert conn.ext.offered_qos_profiles[0].reliability.name == "BEST_EFFORT"
        read = [(t, STORE.deserialize_cdr(d, conn.msgtype)) for _, t, d in reader.messages()]
    assert [t for t, _ in read] == [t for t, _ in msgs]
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in read] == \
        [T0 + i * 5_000_000 for i in range(20)]
    with pytest.raises(ConfigError, match="exists already"):
        BagWriter(tmp_path / "bag")


def test_unknown_message_type_is_refused_naming_the_topic(tmp_path):
    with BagWriter(tmp_path / "bag") as bag:
        with pytest.raises(ConfigError, match="topic /x: message type 'my_msgs/msg/Thing' is not a kilted"):
            bag.add_topic("/x", "my_msgs/msg/Thing")


def test_stamps_read_and_shifted_in_raw_cdr():
    data = STORE.serialize_cdr(image(T0 + 123), "sensor_msgs/msg/Image")
    assert stamp_ns(data) == T0 + 123
    shifted = with_stamp_shifted(data, 2 * 10**9 + 999_999_999)
    msg = STORE.deserialize_cdr(shifted, "sensor_msgs/msg/Image")
    assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == T0 + 123 + 2 * 10**9 + 999_999_999
    assert bytes(msg.data) == bytes(STORE.deserialize_cdr(data, "sensor_msgs/msg/Image").data)
    assert has_stamp("sensor_msgs/msg/Image") and has_stamp("std_msgs/msg/Header")
    assert has_stamp("rosgraph_msgs/msg/Clock") and not has_stamp("std_msgs/msg/Bool")
    assert not has_stamp("std_msgs/msg/Float64MultiArray")


def test_truncated_bag_fails_in_one_line_naming_the_file(tmp_path):
    bag = write_bag(tmp_path / "bag", seconds=1.0)
    (mcap,) = bag.glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(BagError, match=rf"bag '{bag}': {mcap} is truncated at offset \d+ ") as error:
        BagReader(bag)
    assert "\n" not in str(error.value)


def test_bag_without_metadata_and_missing_bag_are_named(tmp_path):
    bag = write_bag(tmp_path / "bag", seconds=0.5)
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagError, match="has no metadata.yaml"):
        BagReader(bag)
    with pytest.raises(ConfigError, match=f"bag '{tmp_path / 'nope'}' does not exist"):
        BagReader(tmp_path / "nope")


# --- replay schedule ---------------------------------------------------------------------------------------
def test_schedule_scales_recorded_timing_and_validates():
    schedule = ReplaySchedule.for_bag(T0, T0 + 10 * 10**9, start_offset_s=2.0, rate=4.0)
    assert schedule.first_ns == T0 + 2 * 10**9
    assert schedule.due_s(T0 + 6 * 10**9) == pytest.approx(1.0)
    assert schedule.bag_ns(1.0) == T0 + 6 * 10**9
    assert schedule.loop_shift_ns(2) == 2 * (8 * 10**9 + LOOP_GAP_NS)
    with pytest.raises(ConfigError, match="start offset 11 s is outside the bag"):
        ReplaySchedule.for_bag(T0, T0 + 10 * 10**9, 11.0, 1.0)
    with pytest.raises(ConfigError, match="rate 0"):
        ReplaySchedule(T0, T0, 0.0)


def test_timeline_interleaves_clock_ticks_and_loops_shift_stamps():
    schedule = ReplaySchedule(T0, T0 + 10**9, rate=2.0)
    header = STORE.types["std_msgs/msg/Header"](stamp=STORE.types["builtin_interfaces/msg/Time"](sec=T0 // 10**9,
                                                                                            nanosec=0), frame_id="")
    data = STORE.serialize_cdr(header, "std_msgs/msg/Header")
    messages = [("/h", T0, data), ("/h", T0 + 10**9, data)]
    one_pass = list(passes(lambda: iter(messages), schedule, loop=False, stamped={"/h"}))
    assert [t for _, t, _ in one_pass] == [T0, T0 + 10**9]
    looped = passes(lambda: iter(messages), schedule, loop=True, stamped={"/h"})
    third = [next(looped) for _ in range(3)][2]
    assert third[1] == T0 + 10**9 + LOOP_GAP_NS and stamp_ns(third[2]) == T0 + 10**9 + LOOP_GAP_NS
    events = list(timeline(iter(messages), schedule, clock_period_s=0.1))
    clocks = [(due, bag_ns) for due, topic, bag_ns, _ in events if topic is None]
    assert clocks[0] == (0.0, T0) and len(clocks) == 6  # every 0.1 s of wall time up to the last message (0.5 s)
    assert [bag_ns for _, bag_ns in clocks] == sorted(bag_ns for _, bag_ns in clocks)
    assert [due for due, topic, _, _ in events if topic == "/h"] == [0.0, 0.5]


# --- lockstep observation sets ------------------------------------------------------------------------------
def samples_at(spec):
    """[(topic, stamp ms)] in log order (log time = stamp) -> Samples."""
    return [lockstep.Sample(topic, T0 + ms * 10**6, T0 + ms * 10**6, i) for i, (topic, ms) in enumerate(spec)]


def test_sets_take_the_latest_inputs_before_each_matched_reference():
    spec = [("/img", 0), ("/ref", 5), ("/img", 33), ("/ref", 205), ("/img", 201), ("/ref", 210), ("/ref", 405)]
    samples = samples_at(sorted(spec, key=lambda s: s[1]))
    chunk_stamps = [T0 + 5 * 10**6, T0 + 205 * 10**6 + 128, T0 + 405 * 10**6]  # (float-second rounding)
    plan = lockstep.plan_sets(samples, "/ref", {"/img": 0.1, "/ref": 0.1}, chunk_stamps_ns=chunk_stamps)
    assert [s.stamp_ns for s in plan.sets] == [T0 + 5 * 10**6, T0 + 205 * 10**6]
    assert [[(x.topic, x.stamp_ns - T0) for x in s.samples] for s in plan.sets] == [
        [("/img", 0), ("/ref", 5 * 10**6)], [("/img", 201 * 10**6), ("/ref", 205 * 10**6)]]
    assert plan.skipped == {"an input was older than its max age": 1}  # at 405 the image is 204 ms old


def test_sets_without_chunks_come_every_period_and_are_separated_by_more_than_the_max_age():
    rng = np.random.default_rng(0)
    spec = [("/img", ms) for ms in range(0, 3000, 33)] + [("/ref", ms) for ms in range(0, 3000, 10)]
    spec = [(topic, ms + int(rng.integers(0, 3))) for topic, ms in spec]
    plan = lockstep.plan_sets(samples_at(sorted(spec, key=lambda s: s[1])), "/ref", {"/img": 0.1, "/ref": 0.1},
                              guarded=["/img"], period_s=0.2)
    assert 13 <= len(plan.sets) <= 15
    for before, after in zip(plan.sets, plan.sets[1:]):
        old = {s.topic: s for s in before.samples}
        sample = after.samples[0]  # the guarded input: what the new set replaces is stale when it is replayed
        assert sample.index == old[sample.topic].index or after.stamp_ns - old[sample.topic].stamp_ns > 0.1e9
        assert all(after.stamp_ns - s.stamp_ns <= 0.1e9 for s in after.samples)  # and its own inputs are fresh


def test_sets_need_every_input_and_guarded_inputs_stale_by_the_next_set():
    spec = [("/ref", 0), ("/img", 10), ("/ref", 20), ("/img", 100), ("/ref", 110), ("/img", 150), ("/ref", 160)]
    plan = lockstep.plan_sets(samples_at(spec), "/ref", {"/img": 0.1, "/ref": 0.1}, guarded=["/img"],
                              chunk_stamps_ns=[T0 + ms * 10**6 for ms in (0, 20, 110, 160)])
    assert [s.stamp_ns - T0 for s in plan.sets] == [20 * 10**6, 160 * 10**6]  # at 110 the image of 10 is fresh
    assert plan.skipped == {"an input had no message yet": 1,
                            "a guarded input would not be stale for the previous set": 1}
    unguarded = lockstep.plan_sets(samples_at(spec), "/ref", {"/img": 0.1, "/ref": 0.1},
                                   chunk_stamps_ns=[T0 + ms * 10**6 for ms in (0, 20, 110, 160)])
    assert len(unguarded.sets) == 3
    with pytest.raises(ConfigError, match="reference topic /x is not one of the inputs"):
        lockstep.plan_sets([], "/x", {"/img": 0.1})


# --- metrics and report -------------------------------------------------------------------------------------
def chunk(stamp_s, x=0.45, horizon=8, dt=0.05, slope=0.0):
    """Points on x(t) = x + slope * (t - 1 s): chunks with the same x and slope agree where they overlap."""
    times = dt * np.arange(1, horizon + 1)
    actions = np.tile([x, 0.0, 0.25, 1.0, 0.0, 0.0, 0.0, 0.04], (horizon, 1))
    actions[:, 0] += slope * (stamp_s + times - 1.0)
    return Chunk(stamp_s, times, actions)


def timed(stamp_s, latency_s=0.03, **kw):
    return metrics.TimedChunk(chunk(stamp_s, **kw), round(stamp_s * 1e9), stamp_s + latency_s)


def test_differences_are_matched_by_stamp_per_step():
    recorded = {1: chunk(1.0), 2: chunk(1.2)}
    moved = chunk(1.2)
    actions = moved.actions.copy()
    actions[5, 1] += 0.02
    actions[3, 3:7] = [np.cos(0.05), np.sin(0.05), 0, 0]  # 0.1 rad about x from (1, 0, 0, 0)
    diff = metrics.differences(recorded, {2: Chunk(1.2, moved.times_s, actions), 3: chunk(1.4)})
    assert diff.stamps_ns == (2,)
    assert diff.position_m[0, 5] == pytest.approx(0.02) and diff.position_m[0, :5].max() == 0
    assert diff.rotation_rad[0, 3] == pytest.approx(0.1) and diff.gripper_m.max() == 0


def test_blended_reference_is_smooth_for_consistent_chunks_and_jumps_for_inconsistent_ones():
    config = ChunkExecutorConfig()
    steady = [timed(1.0 + 0.2 * k, slope=0.05) for k in range(6)]
    jumpy = [timed(1.0 + 0.2 * k, x=0.45 + 0.02 * (k % 2), slope=0.05) for k in range(6)]
    smooth_jumps = metrics.acceleration_jumps(metrics.execute(steady, config))
    rough_jumps = metrics.acceleration_jumps(metrics.execute(jumpy, config))
    assert np.nanmax(rough_jumps) > 10 * max(np.nanmax(smooth_jumps), 0.1)


def test_safety_trips_name_the_chunk_being_executed():
    chunks = [timed(1.0), timed(1.2), timed(1.4, x=0.9)]  # the third leaves the workspace box (x <= 0.75)
    execution = metrics.execute(chunks, ChunkExecutorConfig())
    trips, events = metrics.safety_events(execution, [c.arrival_s for c in chunks], SafetyConfig(),
                                          MujocoRobotModel())
    assert trips.get("workspace") == 1
    first = next(e for e in events if e.reason == "workspace")
    assert first.chunk_stamp_ns == chunks[2].stamp_ns and first.time_s >= chunks[2].arrival_s


def test_report_fails_naming_chunk_and_step_and_writes_its_files(tmp_path):
    executor_config, safety_config = controller_configs(config_dir() / "controller_sim.yaml")
    recorded = [timed(1.0 + 0.2 * k) for k in range(5)]
    replayed = [timed(1.0 + 0.2 * k) for k in range(4)] + [timed(1.8, x=0.46)]
    kwargs = dict(start_ns=10**9, recorded=recorded, rejected=[], skipped_sets={}, executor_config=executor_config,
                  safety_config=safety_config, model=MujocoRobotModel(), info={"bag": "b", "policy": "p"})
    same = evaluate(replayed=recorded, thresholds=Thresholds(), **kwargs)
    assert same.passed and same.report["difference"]["position_m"]["max"] == 0.0
    result = evaluate(replayed=replayed, thresholds=Thresholds(max_position_diff_m=0.005), **kwargs)
    assert not result.passed
    assert result.failures[0].startswith("position_m difference 0.01 > 0.005 at step 0 of chunk stamped "
                                         f"{recorded[4].stamp_ns} ns (0.800 s into the bag)")
    write(result, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] is False and report["chunks"]["matched"] == 5
    assert report["difference"]["position_m"]["worst"] == {"value": pytest.approx(0.01),
                                                           "stamp_ns": recorded[4].stamp_ns, "step": 0}
    assert "FAIL: position_m difference" in (tmp_path / "summary.txt").read_text()
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_controller_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "controller.yaml"
    bad.write_text("controller:\n  ros__parameters:\n    chunks.strategy: sideways\n")
    with pytest.raises(ConfigError, match=f"controller config '{bad}': strategy='sideways'"):
        controller_configs(bad)
    with pytest.raises(ConfigError, match=f"controller config '{tmp_path / 'none.yaml'}'"):
        controller_configs(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="threshold max_latency_s = -1 must be a finite value >= 0"):
        Thresholds(max_latency_s=-1)
