"""The episode runner's errors name the silent node or topic, not a symptom: homing that gets nowhere says which
link of /policy/chunk -> intervention -> /controller/chunk -> controller is missing (issue 18 item 4), rather
than 'the arm did not reach the start pose'. Real rclpy nodes over DDS on the test's private domain."""
import numpy as np
import pytest
import rclpy
from trajectory_msgs.msg import MultiDOFJointTrajectory

from deploy.errors import DeployError
from deploy.learning.episodes import EpisodeConfig
from deploy.nodes.common import BackgroundSpin
from deploy.nodes.episode_node import EpisodeNode
from harness import Probe, wait_until


@pytest.fixture
def runner(domain_id):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = EpisodeNode((), EpisodeConfig(homing_timeout_s=2.0), context=context)
    spin = BackgroundSpin(node, context)
    node._tcp = np.array([0.4, 0.0, 0.3])  # as if proprioception had been heard: homing starts from here
    yield node
    spin.close()


def test_homing_without_an_intervention_node_names_it(runner):
    with pytest.raises(DeployError) as error:
        runner.home()
    assert str(error.value) == ("no intervention node subscribes to /policy/chunk: nothing relays the homing chunks "
                                "to /controller/chunk (is the intervention node running?)")


def test_homing_without_a_controller_names_its_silent_reference_topic(runner, domain_id):
    relay = Probe(domain_id, name="intervention")  # an intervention node is there; no controller answers
    try:
        chunks = relay.collect(MultiDOFJointTrajectory, "/policy/chunk")
        assert wait_until(lambda: any(i.node_name == "intervention"
                                      for i in runner.get_subscriptions_info_by_topic("/policy/chunk")), 30)
        with pytest.raises(DeployError) as error:
            runner.home()
        assert chunks  # the homing chunks went out and reached the relay ...
        assert str(error.value) == ("no /controller/reference from the controller ever: "
                                    "is the controller node running?")  # ... but nothing moved the arm
    finally:
        relay.close()
