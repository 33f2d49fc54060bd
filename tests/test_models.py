"""Encoders, composers and StyleQueryModel: shapes, gradients, modes, weights loading."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torchvision.models import resnet18

from stylequery.compose import COMPOSERS
from stylequery.config import ModelConfig
from stylequery.errors import ConfigError, WeightsError
from stylequery.image_encoder import ImageEncoder
from stylequery.loss import build_loss
from stylequery.model import StyleQueryModel, build_model
from stylequery.text_encoder import TextEncoder

VOCAB_SIZE = 20
B = 4
D = 16


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(
    composer: str = "tirg", load_pretrained: bool = True, **changes: object
) -> StyleQueryModel:
    cfg = ModelConfig(embed_dim=D, word_dim=16, text_hidden=16, composer=composer)
    for key, value in changes.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    return build_model(cfg, VOCAB_SIZE, load_pretrained=load_pretrained)


def tiny_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source images, target images (B, 3, 32, 32) uint8, tokens (B, 5), lengths (B,)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (2 * B, 3, 32, 32), generator=gen, dtype=torch.uint8)
    tokens = torch.randint(1, VOCAB_SIZE, (B, 5), generator=gen)
    lengths = torch.tensor([5, 3, 1, 2])
    tokens[torch.arange(5) >= lengths[:, None]] = 0  # pad after each sequence
    tokens[0, 0] = 0  # an unknown word
    return images[:B], images[B:], tokens, lengths


def random_resnet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return resnet18(weights=None).state_dict()


def assert_backbone_equals(encoder: ImageEncoder, state: dict[str, torch.Tensor]) -> None:
    for key, value in encoder.backbone.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


@pytest.mark.parametrize("composer", sorted(COMPOSERS))
def test_outputs_have_shape_dtype_and_norm(composer: str) -> None:
    model = tiny_model(composer).eval()
    source, _, tokens, lengths = tiny_batch()
    with torch.no_grad():
        feats = model.image_features(source)
        image = model.encode_image(source, normalize=False)
        text = model.encode_text(tokens, lengths)
        outputs = {
            "image": model.encode_image(source),
            "projected": model.project_image(feats),
            "composed": model.compose(image, text),
            "query": model.encode_query(source, tokens, lengths),
        }
    assert feats.shape == (B, 512) and feats.dtype == torch.float32
    for name, out in [*outputs.items(), ("raw image", image), ("text", text)]:
        assert out.shape == (B, D), name
        assert out.dtype == torch.float32, name
        assert torch.isfinite(out).all(), name
    for name, out in outputs.items():
        torch.testing.assert_close(out.norm(dim=1), torch.ones(B), msg=name)
    torch.testing.assert_close(model.project_image(feats, normalize=False), image)


@pytest.mark.parametrize("composer", sorted(COMPOSERS))
def test_every_trainable_parameter_gets_a_gradient(composer: str) -> None:
    model = tiny_model(composer).train()
    source, target, tokens, lengths = tiny_batch()
    query = model.encode_query(source, tokens, lengths)
    loss = build_loss("batch_classification")(query, model.encode_image(target))
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, param in trainable:
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    text_trainable = any(p.requires_grad for p in model.text_encoder.parameters())
    assert text_trainable == model.uses_text


def test_frozen_backbone_trains_the_rest_from_cached_features() -> None:
    model = tiny_model("tirg", freeze_image_encoder=True).train()
    assert not model.image_encoder.backbone.training  # BatchNorm statistics stay fixed
    assert not any(p.requires_grad for p in model.backbone_parameters())
    source, target, tokens, lengths = tiny_batch()
    with torch.no_grad():
        source_feats, target_feats = model.image_features(source), model.image_features(target)
    image = model.project_image(source_feats, normalize=False)
    query = model.compose(image, model.encode_text(tokens, lengths))
    build_loss("soft_triplet")(query, model.project_image(target_feats)).backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == param.requires_grad, name


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_frozen_stages_cache_a_cut_that_reproduces_the_embedding(stages: int) -> None:
    model = tiny_model("concat", frozen_stages=stages).train()
    frozen = model.image_encoder.stages()[:stages]
    assert all(not p.requires_grad for stage in frozen for p in stage.parameters())
    norms = [m for stage in frozen for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)  # BatchNorm statistics stay fixed
    later = model.image_encoder.stages()[stages:]
    assert all(p.requires_grad for stage in later for p in stage.parameters())
    model.eval()
    source, *_ = tiny_batch()
    with torch.no_grad():
        cut = model.image_features(source)
        expected = model.encode_image(source, normalize=False)
    assert cut.dim() == (2 if stages == 4 else 4)
    torch.testing.assert_close(model.project_image(cut, normalize=False), expected)


def test_frozen_stages_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.frozen_stages"):
        tiny_model("concat", frozen_stages=5)


def test_gated_composer_mixes_image_and_text_by_a_learned_scalar() -> None:
    composer = COMPOSERS["gated"](D, dropout=0.0).eval()
    image, text = torch.randn(B, D), torch.randn(B, D)
    with torch.no_grad():
        both = torch.cat([composer.image_proj(image), composer.text_proj(text)], dim=1)
        a = torch.sigmoid(composer.scalar(both))
        expected = composer.mix(both) + a * text + (1 - a) * image
        torch.testing.assert_close(composer(image, text), expected)
    assert ((a > 0) & (a < 1)).all()


def test_text_encoder_ignores_padding() -> None:
    torch.manual_seed(0)
    encoder = TextEncoder(VOCAB_SIZE, word_dim=16, hidden_dim=16, embed_dim=D).eval()
    short = torch.tensor([[3, 5, 7]])
    padded = torch.tensor([[3, 5, 7, 0, 0, 0], [1, 2, 3, 4, 5, 6], [9, 0, 0, 0, 0, 0]])
    junk = padded.clone()
    junk[0, 3:] = torch.tensor([11, 12, 13])  # whatever follows the last real token is unseen
    with torch.no_grad():
        alone = encoder(short, torch.tensor([3]))
        in_batch = encoder(padded, torch.tensor([3, 6, 1]))
        with_junk = encoder(junk, torch.tensor([3, 6, 1]))
        single = encoder(torch.tensor([[9]]), torch.tensor([1]))
    torch.testing.assert_close(in_batch[0:1], alone)
    torch.testing.assert_close(with_junk, in_batch)
    torch.testing.assert_close(in_batch[2:3], single)


@pytest.mark.parametrize("composer", sorted(COMPOSERS))
def test_eval_mode_is_deterministic(composer: str) -> None:
    model = tiny_model(composer).eval()
    source, _, tokens, lengths = tiny_batch()
    with torch.no_grad():
        first = model.encode_query(source, tokens, lengths)
        second = model.encode_query(source, tokens, lengths)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_channels_last_input_matches_contiguous() -> None:
    model = tiny_model("concat").eval()
    source, _, tokens, lengths = tiny_batch()
    with torch.no_grad():
        expected = model.encode_query(source, tokens, lengths)
        model = model.to(memory_format=torch.channels_last)
        source_cl = source.contiguous(memory_format=torch.channels_last)
        got = model.encode_query(source_cl, tokens, lengths)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_returns_float32_unit_embeddings() -> None:
    model = tiny_model("tirg").eval()
    source, _, tokens, lengths = tiny_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        query = model.encode_query(source, tokens, lengths)
        image = model.encode_image(source)
    for out in (query, image):
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        torch.testing.assert_close(out.norm(dim=1), torch.ones(B))


def test_float_images_are_refused() -> None:
    with pytest.raises(TypeError, match="uint8"):
        tiny_model().encode_image(torch.zeros(1, 3, 32, 32))


def test_unknown_composer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.composer.*concat"):
        tiny_model("sum")


def test_parameter_split_covers_every_parameter_once() -> None:
    model = tiny_model("tirg")
    backbone = [id(p) for p in model.backbone_parameters()]
    head = [id(p) for p in model.head_parameters()]
    everything = [id(p) for p in model.parameters()]
    assert backbone and head
    assert len(set(backbone) | set(head)) == len(backbone) + len(head) == len(everything)
    assert set(backbone) | set(head) == set(everything)


def test_imagenet_offline_names_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as info:
        tiny_model(pretrained="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message


def test_imagenet_loads_from_cache_without_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_download(*args: object, **kwargs: object) -> None:
        pytest.fail("download attempted although the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    state = random_resnet_state()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "resnet18-f37072fd.pth")
    model = tiny_model(pretrained="imagenet")
    assert model.backbone_pretrained
    assert_backbone_equals(model.image_encoder, state)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_local_pth_weights_load(tmp_path: Path, wrapper: str | None) -> None:
    state = random_resnet_state()
    path = tmp_path / "backbone.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    encoder = ImageEncoder(D, pretrained=str(path))
    assert_backbone_equals(encoder, state)


def test_mismatched_pth_names_file_and_key(tmp_path: Path) -> None:
    state = random_resnet_state()
    state["layer9.weight"] = torch.zeros(1)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"odd\.pth.*layer9\.weight"):
        ImageEncoder(D, pretrained=str(path))
    del state["layer9.weight"], state["conv1.weight"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"odd\.pth.*conv1\.weight"):
        ImageEncoder(D, pretrained=str(path))


def test_missing_or_corrupt_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"model\.pretrained.*nothere\.pth"):
        ImageEncoder(D, pretrained=str(tmp_path / "nothere.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"bad\.pth: not a (readable )?weights file"):
        ImageEncoder(D, pretrained=str(bad))


def test_rebuild_without_pretrained_touches_no_file(tmp_path: Path) -> None:
    model = tiny_model(pretrained=str(tmp_path / "gone.pth"), load_pretrained=False)
    assert model.backbone_pretrained  # recorded from the config, for the lr split
