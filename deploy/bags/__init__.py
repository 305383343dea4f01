"""Rosbag2 (MCAP) recording, replay and replay testing, ROS-free.

- `topics`: the stack's topics and their types, presets, the inputs a policy reads, QoS as plain values.
- `store`: writing and reading rosbag2 MCAP with the `rosbags` package (errors name the bag and file), and
  the header stamps of serialized messages read without deserializing them.
- `schedule`: when each message of a replay is due, with rate, start offset and loop.
- `lockstep`: the observation sets a deterministic replay feeds the policy one at a time.
- `report`: replay-test metrics (chunk differences, latency, smoothness after blending, safety trips).
- `commands` (CLI) and `testing` (pytest helper) drive the nodes `recorder_node` and `replay_node`.
"""
