"""AutoConfig / AutoModel / AutoTokenizer: model folders, named models under $GLM_HOME, save → load."""

import shutil

import mindspore as ms
import numpy as np
import pytest

from glm_core import AutoConfig, AutoModel, AutoTokenizer, GLMChatModel, GLMConfig, ModelNotFoundError
from glm_core.auto import locate, model_info, parameter_count
from glm_core.names import CHECKPOINT_NAME

TOKENIZER_FILES = ("ice_text.model", "tokenizer_config.json")


@pytest.fixture(scope="module")
def loaded(model_dir):
    return AutoModel.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def prompt_ids(golden_case):
    return ms.Tensor([golden_case("forward")[3]["input_ids"]], ms.int32)


def test_folder_loads_as_the_golden_model(loaded, golden_model, prompt_ids):
    assert isinstance(loaded, GLMChatModel)
    np.testing.assert_array_equal(loaded(prompt_ids).asnumpy(), golden_model(prompt_ids).asnumpy())


def test_save_then_load_gives_identical_logits(loaded, model_dir, prompt_ids, tmp_path):
    saved = loaded.save_pretrained(tmp_path / "saved", tokenizer=AutoTokenizer.from_pretrained(model_dir))
    assert sorted(p.name for p in saved.iterdir()) == sorted(["config.json", CHECKPOINT_NAME, *TOKENIZER_FILES])
    reloaded = AutoModel.from_pretrained(saved)
    np.testing.assert_array_equal(reloaded(prompt_ids).asnumpy(), loaded(prompt_ids).asnumpy())
    assert AutoConfig.from_pretrained(saved) == loaded.config


def test_tokenizer_save_then_load_encodes_the_same(model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "[Round 0]\n问：你好\n答：Hello  world"
    assert reloaded.encode(text) == tokenizer.encode(text)


def test_save_refuses_a_folder_holding_another_checkpoint(loaded, tmp_path):
    (tmp_path / "old.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"already holds old\.ckpt"):
        loaded.save_pretrained(tmp_path)


def test_hf_config_and_our_config_read_alike(golden_hf_dir, model_dir):
    assert AutoConfig.from_pretrained(golden_hf_dir) == AutoConfig.from_pretrained(model_dir)


def test_autoconfig_knows_the_presets():
    assert AutoConfig.from_pretrained("glm_6b").hidden_size == 4096
    assert AutoConfig.from_pretrained("glm_6b_chat").use_past
    assert AutoConfig.from_pretrained("glm_tiny", seq_length=128).seq_length == 128


def test_named_model_without_files_says_what_to_make(tmp_path, monkeypatch):
    monkeypatch.setenv("GLM_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as error:
        AutoModel.from_pretrained("glm_6b")
    message = str(error.value)
    assert f"model 'glm_6b' is not under the checkpoint home {tmp_path}" in message
    assert "$GLM_HOME" in message
    assert f"{tmp_path}/glm_6b/ holding config.json, one .ckpt, ice_text.model and tokenizer_config.json" in message
    assert f"{tmp_path}/glm_6b.ckpt and {tmp_path}/ice_text.model" in message
    assert "nothing is downloaded" in message
    assert message.endswith(f"glm-convert hf-to-ms PATH/TO/chatglm-6b {tmp_path}/glm_6b")
    assert "\n" not in message


def test_default_home_is_mindformers_download_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("GLM_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match=f"{tmp_path}/checkpoint_download/glm"):
        AutoTokenizer.from_pretrained("glm_6b_chat")


def test_named_model_folder_under_home_loads(model_dir, tmp_path, monkeypatch):
    shutil.copytree(model_dir, tmp_path / "glm_6b_chat")
    monkeypatch.setenv("GLM_HOME", str(tmp_path))
    files = locate("glm_6b_chat")
    assert files.checkpoint == tmp_path / "glm_6b_chat" / "glm_tiny.ckpt"
    assert AutoTokenizer.from_pretrained("glm_6b_chat").num_pieces == 3088
    assert AutoModel.from_pretrained("glm_6b_chat").config.vocab_size == 3200


def test_named_model_in_mindformers_flat_layout_is_found(golden_hf_dir, tmp_path, monkeypatch):
    """``<home>/glm_6b.ckpt`` + ``<home>/ice_text.model``: the config is the named preset."""
    (tmp_path / "glm_6b.ckpt").write_bytes(b"")
    shutil.copy(golden_hf_dir / "ice_text.model", tmp_path)
    monkeypatch.setenv("GLM_HOME", str(tmp_path))
    files = locate("glm_6b")
    assert files.checkpoint == tmp_path / "glm_6b.ckpt"
    assert files.tokenizer_dir == tmp_path
    assert files.config == GLMConfig.from_name("glm_6b")


def test_mindspore_rank_0_checkpoint_folder_is_found(model_dir, tmp_path):
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    (tmp_path / "rank_0").mkdir()
    (tmp_path / "glm_tiny.ckpt").rename(tmp_path / "rank_0" / "glm_tiny.ckpt")
    assert locate(tmp_path).checkpoint == tmp_path / "rank_0" / "glm_tiny.ckpt"


def test_hugging_face_folder_is_told_to_convert(golden_hf_dir):
    with pytest.raises(ModelNotFoundError, match=r"Hugging Face weights .* convert them with glm-convert"):
        AutoModel.from_pretrained(golden_hf_dir)


def test_two_checkpoints_in_a_folder_are_refused(model_dir, tmp_path):
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    shutil.copy(tmp_path / "glm_tiny.ckpt", tmp_path / "other.ckpt")
    with pytest.raises(ModelNotFoundError, match="holds 2 checkpoints"):
        locate(tmp_path)


def test_folder_missing_the_tokenizer_is_named(model_dir, tmp_path):
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    (tmp_path / "ice_text.model").unlink()
    with pytest.raises(ModelNotFoundError, match=r"lacks ice_text\.model"):
        locate(tmp_path)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelNotFoundError, match=r"neither a model folder nor a known model name \(glm_6b, "):
        AutoModel.from_pretrained("glm_7b")


@pytest.mark.parametrize("shape", [dict(), dict(vocab_size=1000, hidden_size=32, num_layers=3, inner_hidden_size=80)])
def test_parameter_count_matches_the_network(shape):
    config = GLMConfig.from_name("glm_tiny", **shape)
    model = GLMChatModel(config)
    assert parameter_count(config) == sum(int(np.prod(p.shape)) for p in model.get_parameters())


def test_parameter_count_of_chatglm_6b():
    # ChatGLM-6B's published 6,173,286,400 plus MindFormers' separate lm_head (130528 x 4096)
    assert parameter_count(GLMConfig.from_name("glm_6b")) == 6_173_286_400 + 130528 * 4096


def test_model_info_names_files_size_and_versions(model_dir):
    info = model_info(model_dir)
    assert info["checkpoint"] == str(model_dir / "glm_tiny.ckpt")
    assert info["parameters"] == 509_696
    assert info["param_dtype"] == "float32"
    assert info["glm_core_version"] == "0.1.0"
    assert info["mindspore_version"] == ms.__version__
    assert info["config"]["num_layers"] == 2
