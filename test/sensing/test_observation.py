import pytest

from deploy.errors import ConfigError
from deploy.sensing.observation import ObservationAssembler


def make():
    return ObservationAssembler({"camera wrist": 0.2, "ee_pose": 0.05}, reference_key="ee_pose")


def test_missing_input_names_it():
    assembler = make()
    assembler.update("ee_pose", 1.0, "pose")
    observation, verdict = assembler.assemble(1.01)
    assert observation is None
    assert verdict == "missing: camera wrist"


def test_stale_input_reports_its_age():
    assembler = make()
    assembler.update("camera wrist", 0.588, "img")
    assembler.update("ee_pose", 0.99, "pose")
    observation, verdict = assembler.assemble(1.0)
    assert observation is None
    assert verdict == "stale: camera wrist 412 ms old"


def test_fresh_inputs_give_observation_stamped_by_reference():
    assembler = make()
    assembler.update("camera wrist", 0.95, "img")
    assembler.update("ee_pose", 0.99, "pose")
    observation, verdict = assembler.assemble(1.0)
    assert verdict == "ok"
    assert observation.stamp_s == 0.99
    assert observation["camera wrist"] == "img"
    assert observation.stamps_s == {"camera wrist": 0.95, "ee_pose": 0.99}


def test_out_of_order_sample_is_dropped():
    assembler = make()
    assert assembler.update("ee_pose", 2.0, "new")
    assert not assembler.update("ee_pose", 1.5, "old")
    assembler.update("camera wrist", 2.0, "img")
    observation, _ = assembler.assemble(2.01)
    assert observation["ee_pose"] == "new"
    assert assembler.out_of_order_drops == 1


def test_bad_config_names_the_problem():
    with pytest.raises(ConfigError, match="reference input 'x'"):
        ObservationAssembler({"a": 1.0}, reference_key="x")
    with pytest.raises(ConfigError, match="max age"):
        ObservationAssembler({"a": 0.0}, reference_key="a")
