"""`deploy collect-demos` and `deploy eval` options that reach the sim graph, without starting it."""


def test_eval_and_collect_forward_their_params_file_to_the_graph_as_an_absolute_path(tmp_path, monkeypatch):
    import deploy.nodes.episode_node as episode_node
    from deploy.cli import build_parser
    from deploy.graph.description import resolve

    calls = []
    monkeypatch.setattr(episode_node, "run_episodes", lambda *args: calls.append(args) or [])
    params = tmp_path / "eval_params.yaml"
    params.write_text("policy:\n  ros__parameters:\n    image_max_age_s: 2.0\n")
    monkeypatch.chdir(tmp_path)
    for command in (["collect-demos"], ["eval", "--policy", "scripted:push_expert"]):
        ns = build_parser().parse_args([*command, "--episodes", "1", "--output", str(tmp_path / "out"),
                                        "--params-file", "eval_params.yaml"])
        ns.func(ns)
        assert calls[-1][-1] == str(params)
    ns = build_parser().parse_args(["collect-demos", "--output", str(tmp_path / "out")])
    ns.func(ns)
    assert calls[-1][-1] == ""  # no file: the shipped config alone
    # and the sim graph layers that file over the policy node's shipped config
    graph = resolve("sim", {"policy": "", "cameras": "front", "params_file": str(params)})
    [policy] = [node for node in graph.nodes if node.name == "policy"]
    assert policy.params_files[-1] == params
