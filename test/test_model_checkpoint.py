"""Checkpoint format of the dissimilarity network: round trip, atomic write, refusal of foreign/mismatched files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mgcda_core.model.checkpoint import load_model, read_checkpoint, save_model
from mgcda_core.model.dissimilarity import DissimNetPrior


def _inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    semantic = F.one_hot(torch.randint(0, 19, (1, 32, 64), generator=g), 19).permute(0, 3, 1, 2).float()
    return (torch.randn(1, 3, 32, 64, generator=g), torch.randn(1, 3, 32, 64, generator=g), semantic,
            torch.rand(1, 3, 32, 64, generator=g))


@pytest.mark.parametrize("encoder", ["vgg16", "efficientnet_lite0"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, encoder: str) -> None:
    model = DissimNetPrior(encoder, width=0.125, use_correlation=False).eval()
    path = tmp_path / "sub" / "model.pt"
    save_model(path, model, extra={"step": 7})
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary file left behind
    loaded = load_model(path).eval()
    assert loaded.architecture == model.architecture
    with torch.no_grad():
        for a, b in zip(model(*_inputs()), loaded(*_inputs())):
            assert torch.equal(a, b)
    payload = read_checkpoint(path)
    assert payload["format"] == "mgcda" and payload["version"] == 1 and payload["step"] == 7
    assert payload["architecture"] == {"encoder": encoder, "width": 0.125, "num_classes": 19,
                                       "use_prior": True, "use_correlation": False, "decoder_width": 0.125,
                                       "first_level": 0, "freeze_encoder": False}


def test_reserved_keys_and_other_modules_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"reserved checkpoint keys \['model'\]"):
        save_model(tmp_path / "m.pt", DissimNetPrior(width=0.125), extra={"model": {}})
    with pytest.raises(TypeError, match="expects a DissimNetPrior .* got Linear"):
        save_model(tmp_path / "m.pt", torch.nn.Linear(2, 2))
    assert not any(tmp_path.iterdir())


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    model = DissimNetPrior(width=0.125)
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(ValueError, match="not an mgcda checkpoint: expected format 'mgcda', found None"):
        load_model(plain)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable mgcda checkpoint \\(not a torch file, or damaged\\)$"):
        load_model(junk)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.pt")


def _rewrite(path: Path, **changes: object) -> None:
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


def test_wrong_architecture_is_refused_naming_the_difference(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_model(path, DissimNetPrior(width=0.125))
    with pytest.raises(ValueError, match="another architecture: encoder: checkpoint 'vgg16' vs expected "
                                         "'efficientnet_lite0'"):
        load_model(path, architecture={"encoder": "efficientnet_lite0"})

    payload = torch.load(path, weights_only=True)
    _rewrite(path, architecture={**payload["architecture"], "use_prior": False})
    with pytest.raises(ValueError, match=r"8 unexpected keys: prior_encoder\.convs\.0\.weight"):
        load_model(path)

    _rewrite(path, architecture={**payload["architecture"], "width": 0.25})
    with pytest.raises(ValueError, match=r"shape mismatches: encoder\.stages\.0\.0\.weight: file "
                                         r"\(8, 3, 3, 3\) vs model \(16, 3, 3, 3\)"):
        load_model(path)

    state = dict(payload["model"])
    del state["head.bias"]
    _rewrite(path, architecture=payload["architecture"], model=state)
    with pytest.raises(ValueError, match=r"1 missing keys: head\.bias"):
        load_model(path)

    _rewrite(path, version=2)
    with pytest.raises(ValueError, match="checkpoint version 2, this code reads 1"):
        load_model(path)


def test_a_frozen_encoder_stored_in_float16_loads_as_the_float32_imagenet_original(tmp_path: Path) -> None:
    from mgcda_core.model.encoder_weights import EncoderWeights
    from mgcda_core.model.shipped import write_shipped

    arch = {"encoder": "efficientnet_lite0", "decoder_width": 0.125, "first_level": 1, "freeze_encoder": True}
    torch.manual_seed(0)
    model = DissimNetPrior(**arch, weights=EncoderWeights.EFFICIENTNET_LITE0_IMAGENET)
    save_model(tmp_path / "trained.pt", model)
    write_shipped(tmp_path / "trained.pt", tmp_path / "half.pt")
    imagenet = model.encoder.state_dict()
    assert any(not torch.equal(v.half().float(), v) for v in imagenet.values() if v.is_floating_point())
    loaded = load_model(tmp_path / "half.pt")
    assert all(torch.equal(loaded.encoder.state_dict()[k], v) for k, v in imagenet.items())
    # the decoder keeps its float16 rounding: only the encoder has an original to go back to
    decoder = dict(loaded.named_parameters())["fuse.0.weight"]
    assert torch.equal(decoder, model.fuse[0].weight.detach().half().float())

    # an encoder that is not exactly rounded ImageNet (e.g. statistics that moved) is left as stored
    moved = DissimNetPrior(**arch, weights=EncoderWeights.EFFICIENTNET_LITE0_IMAGENET)
    bn = next(m for m in moved.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean += 0.5
    save_model(tmp_path / "moved.pt", moved)
    write_shipped(tmp_path / "moved.pt", tmp_path / "moved_half.pt")
    kept = load_model(tmp_path / "moved_half.pt")
    assert all(torch.equal(kept.encoder.state_dict()[k], v.half().float() if v.is_floating_point() else v)
               for k, v in moved.encoder.state_dict().items())
