"""Wrong inputs: one line per problem on stderr, exit 2, naming the key or flag the user wrote; no traceback."""

from __future__ import annotations

import pytest
import yaml

from stacks.cli import main


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out


@pytest.mark.parametrize(
    "config, lines",
    [
        ({"vllm-fleet:teir": "small"}, ["vllm-fleet:teir: unknown key; did you mean vllm-fleet:tier?"]),
        ({"vllm-fleet:monthlyBudget": 100}, ["vllm-fleet:monthlyBudget: unknown key; did you mean vllm-fleet:monthlyBudgetUsd?"]),
        ({"vllm_fleet:tier": "small"}, ["vllm_fleet:tier: unknown namespace 'vllm_fleet'; did you mean vllm-fleet:tier?"]),
        ({"vllm-fleet:models": [{"modle": "x"}]}, ["vllm-fleet:models[0].modle: unknown key; did you mean vllm-fleet:models[0].model?"]),
        (
            {"vllm-fleet:teir": "small", "vllm-fleet:lora": {"maxLora": 4}},
            ["vllm-fleet:teir: unknown key; did you mean vllm-fleet:tier?",
             "vllm-fleet:lora.maxLora: unknown key; did you mean vllm-fleet:lora.maxLoras?"],
        ),
    ],
)
def test_misspelt_stack_keys_all_reported_at_once(tmp_path, capsys, config, lines):
    base = {"vllm-fleet:tier": "small", "vllm-fleet:platform": "ecs", "aws:region": "us-east-1"}
    stack = tmp_path / "Pulumi.bad.yaml"
    stack.write_text(yaml.safe_dump({"config": {**base, **config}}))
    code, out = _run(capsys, ["preview", "--stack", str(stack)])
    assert code == 2
    assert out.err.splitlines() == [f"vllm-fleet: error: {lines[0]}", *lines[1:]]


@pytest.mark.parametrize(
    "argv, line",
    [
        (["modls", "list"], "vllm-fleet: error: vllm-fleet: unknown command 'modls'; did you mean 'models'? "
         "commands: fit, plan, prices, models, lora, quotas, preview, synth"),
        (["zzz"], "vllm-fleet: error: vllm-fleet: unknown command 'zzz'; "
         "commands: fit, plan, prices, models, lora, quotas, preview, synth"),
    ],
)
def test_unknown_command_did_you_mean(capsys, argv, line):
    code, out = _run(capsys, argv)
    assert (code, out.err.splitlines()) == (2, [line])


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("vllm-fleet 0.1.0")


def test_models_list_names_the_catalog_and_fit_help_points_to_it(capsys):
    from components.sizing.models import model_catalog

    assert main(["models", "list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(model_catalog())
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = capsys.readouterr().out
    assert "--list-models" not in help_text and "models list" in help_text
