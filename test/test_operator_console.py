"""The operator console as the operator sees it: `deploy launch teleop_session episodes:=1` in a pseudo-terminal
(pty). While the episode runs, a live line about once a second says who has authority, the deadman, the policy's
weight version and the rates; after it, the episode's summary line (issue 18 item 5). The scripted operator takes
over the random-weight policy, so authority and deadman flip to the operator on screen."""
import re

from deploy.policies.runtime import write_random_checkpoint
from harness import wait_until
from test_intervention_node import Terminal

LIVE = re.compile(r"\[episodes\] live episode 1 (\d+) s \| authority (OPERATOR|policy|\?) \| "
                  r"deadman (held|released|\?) \| weights (\S+) \| no episode done yet")
SUMMARY = re.compile(r"\[episodes\] episode 1 \(seed \d+\): (SUCCESS|failure) in [\d.]+ s, operator (\d+)% \| "
                     r"last 1: success (100|0)%, intervention (\d+)% \| no learner \| weights (\S+)")


def test_console_shows_authority_deadman_weights_and_rates_live_in_a_terminal(tmp_path, domain_id):
    checkpoint = write_random_checkpoint(tmp_path / "start", state_keys=("ee_pose", "gripper_width", "cube_pose"),
                                         d_model=32, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
                                         use_vae=False)
    console = Terminal(domain_id, ["launch", "teleop_session", f"policy:={checkpoint}",
                                   f"session:={tmp_path / 'session'}", "episodes:=1", "learn:=false", "cameras:=",
                                   "--domain-id", str(domain_id)])
    try:
        assert console.proc.wait(timeout=400) == 0, console.screen[-3000:]
    finally:
        console.stop()
    screen = console.screen.replace("\r\n", "\n")
    matches = list(LIVE.finditer(screen))
    live = [m.groups() for m in matches]
    assert len(live) >= 3, screen[-3000:]  # refreshed while the episode ran ...
    assert len({seconds for seconds, *_ in live}) >= 3  # ... with the time going on
    authority = [a for _, a, _, _ in live]
    assert authority[0] == "policy" and "OPERATOR" in authority, live  # the scripted operator took over, on screen
    assert live[0][2] == "released" and ("OPERATOR", "held") in {(a, d) for _, a, d, _ in live}, live  # its deadman
    versions = {v for *_, v in live} - {"none"}
    assert versions, live  # the policy's weight version, once its chunks arrive
    summary = SUMMARY.search(screen)
    assert summary, screen[-3000:]
    outcome, operator, success, intervention, weights = summary.groups()
    assert operator == intervention != "0"  # one episode: its share of operator steps is the rate
    assert success == ("100" if outcome == "SUCCESS" else "0")
    assert weights in versions
    assert matches[-1].start() < summary.start()  # the live lines while it ran, the summary after the episode
