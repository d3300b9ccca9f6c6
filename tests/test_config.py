"""TrainConfig validation and the `sage train` CLI: every mistake is one clear line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sage_core.defs.config import PRESETS, TrainConfig, load_config, parse_overrides
from sage_core.defs.errors import ConfigError


def test_defaults_are_the_official_sage_run():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.lambda_safe, cfg.concept, cfg.concept_guidance_scale) == (
        1e-5, 128, 2, 0.3, "nudity", 205.0)
    assert (cfg.local_k, cfg.alpha, cfg.lambda_esp, cfg.lambda_lsa, cfg.weight_decay) == (15, 1.0, 2.0, 0.1, 0.01)
    assert cfg.des_terms == (1, 2, 3)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads(name):
    # paper and des train SD's CLIP text encoder (they refuse MiniLM): sd14-init stands in for the folder
    import yaml

    from sage_core.defs.config import preset_path

    cfg = load_config(preset=name, overrides={"encoder": "sd14-init"} if name in ("paper", "des") else None)
    written = yaml.safe_load(preset_path(name).read_text(encoding="utf-8"))
    written.pop("encoder", None)
    assert written and {k: getattr(cfg, k) for k in written} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in written.items()}  # every value the file sets


def test_paper_preset_equals_defaults_except_encoder_length_and_numerics():
    cfg = load_config(preset="paper", overrides={"encoder": "sd14-init"})
    assert cfg.replace(max_length=None, encoder="minilm", require_clip_encoder=False, precision="auto") == TrainConfig()


def test_overrides_parse_yaml_values():
    assert parse_overrides(["lambda_esp=1.5", "des_terms=[1, 2]", "concept=nude body", "max_steps=null"]) == {
        "lambda_esp": 1.5, "des_terms": [1, 2], "concept": "nude body", "max_steps": None}


def test_all_field_problems_reported_together():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"lamda_esp": 1, "lr": -1, "epochs": 0})
    text = str(err.value)
    assert "did you mean 'lambda_esp'" in text and "lr=-1" in text and "epochs=0" in text


BAD_SETS = [
    (["--set", "lamda_esp=1.0"], "unknown key 'lamda_esp' (did you mean 'lambda_esp'?)"),
    (["--set", "lambda_esp=-1"], "lambda_esp=-1"),
    (["--set", "local_k=128"], "local_k=128 needs batch_size >= local_k + 1"),
    (["--set", "lambda_safe=1.5"], "lambda_safe=1.5"),
    (["--set", "safe_prompts=/nope/safe.csv"], "safe_prompts='/nope/safe.csv': no such file"),
    (["--set", "encoder=/nope/sd"], "encoder='/nope/sd': no such folder"),
    (["--set", "method=sgd"], "method='sgd'"),
    (["--set", "micro_batch_size=48"], "micro_batch_size=48 must divide batch_size=128"),
    (["--set", "method=des"], "method 'des' needs lambda_esp = lambda_lsa = 0"),
    (["--set", "lambda_esp"], "expected KEY=VALUE"),
    (["--preset", "papr"], "unknown preset 'papr' (did you mean 'paper'?)"),
    (["--config", "/nope/cfg.yaml"], "config file '/nope/cfg.yaml' does not exist"),
    (["--set", "des_terms=[1, 4]"], "des_terms=[1, 4]: allowed is a non-empty subset of [1, 2, 3]"),
    (["--set", "lr=0"], "lr=0"),
    (["--set", "precision=bf16", "--set", "device=cpu"], "precision 'bf16' is for GPUs"),
    (["--set", "concept_guidance_scale=null"], "set concept_guidance_scale or concept_guidance_ratio"),
]


def _sage(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeps", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_cli_bad_configs_are_one_line_errors(tmp_path):
    # All cases in one process: importing the CLI once keeps this fast.
    from typer.testing import CliRunner

    from sweeps.cli import app, user_errors

    runner = CliRunner()
    for args, expected in BAD_SETS:
        res = runner.invoke(app, ["train", "--preset", "paper", *args] if "--preset" not in args and "--config" not in args
                            else ["train", *args])
        assert res.exit_code != 0, args
        assert isinstance(res.exception, user_errors()), (args, res.exception)
        msg = str(res.exception)
        assert expected in msg, (args, msg)
        assert "\n" not in msg, msg


def test_cli_error_has_no_traceback_and_exit_code_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lambda_esp: [1, 2\n", encoding="utf-8")
    res = _sage("train", "--config", str(bad))
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: config file")
    assert "not valid YAML" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_show_config_resolves_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lambda_esp: 1.0\nlocal_k: 10\n", encoding="utf-8")
    res = _sage("train", "--config", str(cfg), "--set", "local_k=12", "--show-config")
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["lambda_esp"] == 1.0 and shown["local_k"] == 12 and shown["lr"] == 1e-5


def test_cli_train_runs_and_writes_a_checkpoint(tiny_clip, tiny_data, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    lines = [f"encoder: {tiny_clip}", "max_length: 16", "batch_size: 8", "local_k: 3", "max_steps: 2",
             "epochs: 1", "eval_every: 2", "diag_samples: 16", "diag_k: 4", f"cache_dir: {tmp_path / 'cache'}"]
    lines += [f"{k}: {v}" for k, v in tiny_data.items()]
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = _sage("train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "done: 2 steps" in res.stdout and "spread_ratio" in res.stdout
    assert (tmp_path / "run" / "checkpoints" / "step_000002" / "text_encoder" / "config.json").is_file()
    assert (tmp_path / "run" / "log.jsonl").read_text().count('"eval"') == 1


def test_booleans_are_not_numbers_but_whole_numbers_are_floats(tmp_path):
    from sage_core.defs.config import load_config

    assert load_config(overrides={"lr": 1, "lambda_esp": 0}).lr == 1.0  # an int where a float goes is fine
    for key, value in (("lr", True), ("local_k", False), ("adam_betas", [True, 0.9]), ("des_terms", [1, True]),
                       ("max_steps", True)):
        with pytest.raises(ConfigError, match=rf"{key}=.*a boolean \(true/false\) is not a number"):
            load_config(overrides={key: value})
    assert load_config(overrides={"precision": "fp32"}).precision == "fp32"


@pytest.mark.parametrize("key", ["encoder", "safe_prompts", "unsafe_prompts", "diag_prompts", "cache_dir"])
def test_empty_strings_are_not_paths(key):
    from sage_core.defs.config import load_config

    with pytest.raises(ConfigError, match=rf"{key}='  ': an empty string is not a path"):
        load_config(overrides={key: "  "})


def test_safe_yaml_bounds(tmp_path):
    from sage_core.defs.safe_yaml import MAX_BYTES, MAX_VALUES, load_yaml_text, read_yaml_file

    # an alias counts as a copy each time it is used: 100 uses of a 1,000-value list is past the bound
    assert load_yaml_text("a: &a [1, 2]\nb: [*a, *a]\n", where="t") == {"a": [1, 2], "b": [[1, 2], [1, 2]]}
    wide = "a: &a [" + ", ".join(["0"] * 999) + "]\nb: [" + ", ".join(["*a"] * 100) + "]\n"
    with pytest.raises(ConfigError, match=f"more than {MAX_VALUES:,} values"):
        load_yaml_text(wide, where="t")
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        read_yaml_file(big, what="config")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_yaml_text("[" * 5000 + "]" * 5000, where="t")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml_text("a: !!python/object/apply:os.system ['true']\n", where="t")


# What each preset is for: the keys it sets to values other than TrainConfig's defaults. Every other
# key a preset writes repeats a default (written out for the reader) and must stay equal to it.
PRESET_CHANGES = {
    "paper": {"require_clip_encoder", "precision", "max_length"},
    "des": {"method", "require_clip_encoder", "precision", "max_length", "concept_guidance_scale", "lambda_esp",
            "lambda_lsa"},
    "quickstart": {"max_length", "concept_guidance_scale", "concept_guidance_ratio", "local_k", "lr", "batch_size",
                   "epochs", "max_steps", "max_pairs", "eval_every", "checkpoint_every", "text_eval"},
}


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_repeats_only_trainconfigs_defaults_besides_what_it_changes(name):
    import yaml

    from sage_core.defs.config import preset_path

    written = yaml.safe_load(preset_path(name).read_text())
    defaults = {k: f.get_default(call_default_factory=True) for k, f in TrainConfig.model_fields.items()}
    assert set(PRESET_CHANGES[name]) <= set(written)
    changed = {k for k, v in written.items() if (tuple(v) if isinstance(v, list) else v) != defaults[k]}
    assert changed == PRESET_CHANGES[name]


def test_the_ablation_fallback_base_is_the_paper_preset():
    import yaml

    from analysis.ablation import ABLATION_PARAMS, PAPER_DEFAULTS
    from sage_core.defs.config import field_defaults, preset_path

    paper = yaml.safe_load(preset_path("paper").read_text())
    assert PAPER_DEFAULTS == {k: paper[k] for k in ("lambda_safe", "lambda_esp", "lambda_lsa", "local_k", "alpha",
                                                    "concept_guidance_scale")}
    assert PAPER_DEFAULTS == {k: field_defaults()[k] for k in PAPER_DEFAULTS}
    assert ABLATION_PARAMS[:6] == tuple(PAPER_DEFAULTS) and PAPER_DEFAULTS["lambda_esp"] == 2.0
