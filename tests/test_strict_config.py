"""Strict at the boundary: config.json values and checkpoint files are checked where they enter,
and every problem names the file and the key (never a silently wrong model or a raw traceback)."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import xlmr_jax
from xlmr_jax import CheckpointError, XLMRobertaConfig


def write_config(tmp_path, **values):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "xlm-roberta", **values}))
    return path


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # silently wrong before: read as true / as a decoder, or NaN / a crash in the forward
        ({"tie_word_embeddings": "false"}, '"tie_word_embeddings" must be a bool, got the str "false"'),
        ({"is_decoder": "yes"}, '"is_decoder" must be a bool, got the str "yes"'),
        ({"layer_norm_eps": "1e-5"}, '"layer_norm_eps" must be a float > 0, got the str "1e-5"'),
        ({"layer_norm_eps": -1}, '"layer_norm_eps" must be a float > 0, got the int -1'),
        # crashes before: ZeroDivisionError, JAX tracebacks, int("three"), list.items()
        ({"num_attention_heads": 0}, '"num_attention_heads" must be a positive int, got the int 0'),
        ({"hidden_size": -32}, '"hidden_size" must be a positive int, got the int -32'),
        ({"intermediate_size": 37.5}, '"intermediate_size" must be a positive int, got the float 37.5'),
        ({"pad_token_id": "1"}, '"pad_token_id" must be an int >= 0, got the str "1"'),
        ({"num_labels": "three"}, '"num_labels" must be a positive int, got the str "three"'),
        ({"id2label": ["a", "b"]}, '"id2label" must map integer ids to label names (str), got the list'),
        ({"id2label": {"first": "a"}}, '"id2label" must map integer ids to label names'),
        ({"pad_token_id": 1000, "max_position_embeddings": 40, "vocab_size": 2000},
         '"max_position_embeddings" (40) must exceed "pad_token_id" + 1 (1001)'),
        ({"pad_token_id": 120, "vocab_size": 99}, '"pad_token_id" (120) must be < "vocab_size" (99)'),
        ({"hidden_dropout_prob": 1.5}, '"hidden_dropout_prob" must be a float in [0, 1], got the float 1.5'),
        ({"num_labels": 3, "id2label": {"0": "a"}}, '"num_labels" is the int 3 but "id2label" has 1 labels'),
        ({"model_type": ["xlm-roberta"]}, "model_type=['xlm-roberta'] is not an XLM-RoBERTa model"),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path, values, message):
    path = write_config(tmp_path, **values)
    with pytest.raises(ValueError) as err:
        XLMRobertaConfig.from_json_file(path)
    assert str(err.value).startswith(f"{path}:") and message in str(err.value)


def test_every_problem_in_one_error(tmp_path):
    path = write_config(tmp_path, tie_word_embeddings="false", num_attention_heads=0, layer_norm_eps=-1,
                        num_labels="three")
    with pytest.raises(ValueError) as err:
        XLMRobertaConfig.from_json_file(path)
    for key in ("tie_word_embeddings", "num_attention_heads", "layer_norm_eps", "num_labels"):
        assert f'"{key}"' in str(err.value)


def test_a_huge_value_gives_a_short_message(tmp_path):
    path = write_config(tmp_path, hidden_act="x" * 10**6)
    with pytest.raises(ValueError, match='"hidden_act" must be one of') as err:
        XLMRobertaConfig.from_json_file(path)
    assert len(str(err.value)) < 500


def test_values_the_reference_writes_are_accepted(tmp_path):
    config = XLMRobertaConfig.from_json_file(write_config(
        tmp_path, hidden_dropout_prob=0, classifier_dropout=None, eos_token_id=[2, 3], pad_token_id=None,
        id2label={"0": "NEG", "1": "POS"}, num_labels=2,
    ))
    assert (config.eos_token_id, config.pad_token_id, config.num_labels) == (2, 1, 2)


def test_config_changes_are_checked_too():
    with pytest.raises(ValueError, match='"num_labels" must be a positive int, got the str "three"'):
        XLMRobertaConfig().replace(num_labels="three")
    with pytest.raises(ValueError, match='"is_decoder" must be a bool'):
        XLMRobertaConfig().replace(is_decoder="yes")
    with pytest.raises(ValueError, match='"vocab_size" must be a positive int, got the bool true'):
        XLMRobertaConfig(vocab_size=True)


def test_many_layers_give_a_short_error(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    edited = shutil.copytree(path, tmp_path / "deep")
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 200000}))
    with pytest.raises(CheckpointError, match=r"layers \[3, 4, \.\.\., 199999\] \(199997 in all\)") as err:
        xlmr_jax.XLMRobertaModel.from_pretrained(edited)
    assert len(str(err.value)) < 5000


# -- checkpoint files ---------------------------------------------------------------------------

def test_integer_tensor_for_a_float_parameter_is_refused(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    edited = shutil.copytree(path, tmp_path / "int")
    weights = os.path.join(edited, "model.safetensors")
    tensors = load_file(weights)
    key = "roberta.embeddings.word_embeddings.weight"
    tensors[key] = (tensors[key] * 1e9).astype(np.int32)
    save_file(tensors, weights, metadata={"format": "pt"})
    expected = f"tensor '{key}' in .*model.safetensors: dtype int32, but its parameter is a float"
    with pytest.raises(CheckpointError, match=expected) as err:
        xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(edited)
    assert "missing" not in str(err.value)  # the one problem, not also reported as absent
    from xlmr_jax.convert import convert_checkpoint

    with pytest.raises(CheckpointError, match=expected):
        convert_checkpoint(edited, tmp_path / "flax", to="flax")
    assert not os.path.exists(tmp_path / "flax")


@pytest.mark.parametrize("bad_name", [7, None, "../elsewhere.safetensors"])
def test_shard_index_with_bad_file_names(reference_checkpoint, tmp_path, bad_name):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    edited = shutil.copytree(path, tmp_path / "sharded")
    keys = list(load_file(os.path.join(edited, "model.safetensors")))
    weight_map = {key: "model.safetensors" for key in keys}
    weight_map[keys[0]] = bad_name
    index = {"metadata": {}, "weight_map": weight_map}
    (edited / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"index.json: 'weight_map' must give each tensor a file name"):
        xlmr_jax.XLMRobertaModel.from_pretrained(edited)


def test_weights_file_given_instead_of_its_directory(reference_checkpoint):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    with pytest.raises(NotADirectoryError, match=r"model.safetensors is a file: pass the checkpoint dir"):
        xlmr_jax.XLMRobertaModel.from_pretrained(os.path.join(path, "model.safetensors"))


def test_symlink_loops_are_named(reference_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink("loop", "loop")  # a name that also looks like a hub id: it must not go to the hub
    with pytest.raises(FileNotFoundError, match="loop cannot be opened .*symbolic links"):
        xlmr_jax.XLMRobertaModel.from_pretrained("loop")
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    edited = shutil.copytree(path, tmp_path / "ckpt")
    weights = edited / "model.safetensors"
    os.remove(weights)
    os.symlink(weights, weights)
    with pytest.raises(CheckpointError, match=r"model.safetensors: cannot read \(Too many levels of"):
        xlmr_jax.XLMRobertaModel.from_pretrained(edited)


def test_unreadable_config_is_not_reported_as_missing(reference_checkpoint, tmp_path, monkeypatch):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    edited = shutil.copytree(path, tmp_path / "ckpt")
    config = edited / "config.json"
    text = config.read_text()
    os.remove(config)
    os.mkdir(config)
    with pytest.raises(ValueError, match=r"config.json: cannot read \(Is a directory\)"):
        xlmr_jax.XLMRobertaModel.from_pretrained(edited)
    os.rmdir(config)
    config.write_text(text)
    # Tests run as root, which permission bits do not stop: the denial is simulated where it happens.
    real_open = open

    def denying_open(file, *args, **kwargs):
        if os.fspath(file) == str(config):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denying_open)
    with pytest.raises(ValueError, match=r"config.json: cannot read \(Permission denied\)"):
        xlmr_jax.XLMRobertaModel.from_pretrained(edited)


def test_unreadable_directory_is_not_reported_as_empty(reference_checkpoint, monkeypatch):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    real_access = os.access
    monkeypatch.setattr(os, "access", 
                        lambda p, mode, **kw: os.fspath(p) != path and real_access(p, mode, **kw))
    with pytest.raises(PermissionError, match=f"checkpoint directory {path} is not readable"):
        xlmr_jax.XLMRobertaModel.from_pretrained(path)
