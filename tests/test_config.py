"""Config: HF config.json in and out, presets with the released values, clear errors."""

import json

import numpy as np
import pytest
import torch
import transformers
from flax import nnx

import xlmr_jax
from xlmr_jax import XLMRobertaConfig


def test_missing_keys_take_the_reference_class_defaults():
    ours = XLMRobertaConfig.from_dict({"model_type": "xlm-roberta"})
    ref = transformers.XLMRobertaConfig()
    for key in ("layer_norm_eps", "type_vocab_size", "vocab_size", "max_position_embeddings", "hidden_size"):
        assert getattr(ours, key) == getattr(ref, key), key
    xl = XLMRobertaConfig.from_dict({"model_type": "xlm-roberta-xl"})
    assert xl.pre_layer_norm and xl.layer_norm_eps == transformers.XLMRobertaXLConfig().layer_norm_eps


def test_round_trip_through_transformers(tmp_path):
    ours = XLMRobertaConfig.preset("large", num_labels=5, problem_type="single_label_classification")
    ours = ours.replace(extra={"architectures": ["XLMRobertaForSequenceClassification"], "custom_key": 7})
    ours.to_json_file(tmp_path / "config.json")
    ref = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(ref) is transformers.XLMRobertaConfig
    assert (ref.hidden_size, ref.num_hidden_layers, ref.layer_norm_eps, ref.num_labels) == (1024, 24, 1e-5, 5)
    assert ref.custom_key == 7
    back = XLMRobertaConfig.from_json_file(tmp_path / "config.json")
    assert back == ours


def test_xl_config_is_read_by_transformers_as_xl(tmp_path):
    XLMRobertaConfig.preset("xl").to_json_file(tmp_path / "config.json")
    assert type(transformers.AutoConfig.from_pretrained(tmp_path)) is transformers.XLMRobertaXLConfig


@pytest.mark.parametrize("preset", ["base", "large", "xl", "xxl"])
def test_presets_have_the_reference_parameter_count(preset):
    """Abstract build on both sides (eval_shape / torch meta device): no memory is used."""
    config = XLMRobertaConfig.preset(preset)
    ours = nnx.eval_shape(lambda: xlmr_jax.XLMRobertaForMaskedLM(config))
    count = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(ours, nnx.Param)))
    hf_config = transformers.AutoConfig.for_model(**config.to_dict())
    with torch.device("meta"):
        cls = transformers.XLMRobertaXLForMaskedLM if config.pre_layer_norm else transformers.XLMRobertaForMaskedLM
        ref = cls(hf_config)
    assert count == sum(p.numel() for p in ref.parameters())
    expected_billions = {"base": 0.279, "large": 0.561, "xl": 3.48, "xxl": 10.7}[preset]
    assert abs(count / 1e9 - expected_billions) / expected_billions < 0.01


def test_bad_configs_are_named(tmp_path):
    with pytest.raises(ValueError, match="position_embedding_type='relative_key'"):
        XLMRobertaConfig.from_dict({"position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="model_type='bert'"):
        XLMRobertaConfig.from_dict({"model_type": "bert"})
    with pytest.raises(ValueError, match=r'"hidden_size" \(30\) must be divisible by "num_attention_heads"'):
        XLMRobertaConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match='"hidden_act" must be one of .*, got the str "gelu_fast"'):
        XLMRobertaConfig(hidden_act="gelu_fast")
    with pytest.raises(ValueError, match='"add_cross_attention" true needs "is_decoder" true'):
        XLMRobertaConfig(add_cross_attention=True)
    with pytest.raises(ValueError, match="unknown preset"):
        XLMRobertaConfig.preset("huge")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=f"{bad} is not valid JSON"):
        XLMRobertaConfig.from_json_file(bad)
    bad.write_text(json.dumps({"model_type": "xlm-roberta", "hidden_act": "gelu_fast"}))
    with pytest.raises(ValueError, match=f'{bad}: "hidden_act" must be one of'):
        XLMRobertaConfig.from_json_file(bad)


def test_config_is_hashable_static_metadata():
    a = XLMRobertaConfig(id2label={0: "a", 1: "b"})
    assert hash(a) == hash(XLMRobertaConfig(id2label={0: "a", 1: "b"})) and a.num_labels == 2
    assert hash(a) != hash(a.replace(id2label={0: "a", 1: "c"}))
