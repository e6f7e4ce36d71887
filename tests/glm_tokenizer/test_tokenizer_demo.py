"""``python -m glm_tokenizer.demo`` and the tiny vocabulary shipped inside the package."""

from glm_tokenizer import demo


def test_shipped_tiny_vocabulary_is_the_golden_one(golden_hf_dir):
    for name in ("ice_text.model", "tokenizer_config.json"):
        assert (demo.TINY_VOCABULARY / name).read_bytes() == (golden_hf_dir / name).read_bytes()


def test_demo_prints_tokens_and_ids_of_the_given_text(capsys):
    demo.main(["你好"])
    output = capsys.readouterr().out
    assert "not the real ChatGLM-6B one" in output
    assert "tokens: ['▁', '你', '好']" in output
    assert "ids:    [261, 353, 394, 3001, 3004]" in output


def test_demo_without_text_shows_every_sample(capsys):
    demo.main([])
    output = capsys.readouterr().out
    assert all(repr(text) in output for text in demo.SAMPLE_TEXTS)


def test_demo_loads_the_vocabulary_it_is_given(golden_hf_dir, capsys):
    demo.main(["--vocab", str(golden_hf_dir / "ice_text.model"), "a  b"])
    assert "tokens: ['▁a', '<|blank_2|>', 'b']" in capsys.readouterr().out
