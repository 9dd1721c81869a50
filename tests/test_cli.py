"""The command lines name the same things the same way, and a former spelling still works with a deprecation line."""
import argparse

import pytest

import app
import bench
import caption
import evaluate
import export_encoder
import scst
import train
from pipeline import cli


@pytest.mark.parametrize("parse, old, new", [
    (lambda argv: evaluate.parse_args(["--no-bertscore", "--data", "d", *argv]), "--weights", "model"),
    (bench.parse_args, "--weights", "model"),
    (export_encoder.parse_args, "--weights", "model"),
    (app.parse_args, "--weights", "fallback_model"),
])
def test_a_former_spelling_still_works_and_says_what_replaces_it(parse, old, new, capsys, tmp_path):
    args = parse([old, str(tmp_path)])
    assert str(getattr(args, new)) == str(tmp_path)
    replacement = "--" + new.replace("_", "-")
    assert f"{old} is deprecated and will be removed; use {replacement}" in capsys.readouterr().err
    assert str(getattr(parse([replacement, str(tmp_path)]), new)) == str(tmp_path)
    assert "deprecated" not in capsys.readouterr().err


@pytest.mark.parametrize("parser", [evaluate.parse_args, bench.parse_args, caption.parse_args, train.parse_args,
                                    scst.parse_args, export_encoder.parse_args, app.parse_args])
def test_every_entry_point_explains_the_shared_options_alike(parser, capsys):
    with pytest.raises(SystemExit):
        parser(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    shared = {"--model": None, "--beam-size": "1 (greedy) to 10", "--cache-dir": "$CAPTION_CACHE_DIR",
              "--backbone-weights": "$CAPTION_BACKBONE_WEIGHTS"}
    for option, explained in shared.items():
        if f"{option} " in text and explained:
            assert explained in text, option
    assert "--weights " not in text  # the former spelling is accepted, not offered


def test_a_beam_size_outside_one_to_ten_is_refused_by_every_command_line():
    parser = argparse.ArgumentParser()
    cli.add_beam_argument(parser)
    assert parser.parse_args(["--beam-size", "10"]).beam_size == 10
    assert parser.parse_args([]).beam_size == 3
    for bad in ("0", "11", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--beam-size", bad])


def test_run_main_turns_an_expected_error_into_one_line_and_lets_others_through():
    with pytest.raises(SystemExit, match="^error: no model$"):
        with cli.run_main(LookupError):
            raise LookupError("no model")
    with pytest.raises(ValueError):
        with cli.run_main(LookupError):
            raise ValueError("a bug")
