"""The networks: shapes through every block, masks, context cache, weights files, one training step."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file, save_file

from vegediff_cli.diffusion.training import diffusion_loss
from vegediff_cli.errors import ModelError
from vegediff_cli.model.presets import PRESETS, ModelConfig
from vegediff_cli.model.vae import kl_divergence
from vegediff_cli.model.vegediff import VegeDiff
from vegediff_cli.model.vegenet import METEOROLOGY
from vegediff_cli.model.weights import load_weights, read_metadata, save_weights

TINY = PRESETS["tiny"]


def _randomised(model: VegeDiff, seed: int = 0) -> VegeDiff:
    """adaLN-Zero starts as the identity; random weights make equivalence tests meaningful."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def _inputs(batch: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 30, 4, 16, 16, generator=gen)
    t = torch.tensor([999.0, 10.0][:batch])
    meteo = torch.randn(batch, 30, 24, generator=gen)
    static = torch.randn(batch, 5, 128, 128, generator=gen)
    return z, t, meteo, static


def test_vae_shapes_and_kl():
    model = VegeDiff(TINY).eval()
    frames = torch.rand(3, 4, 128, 128) * 0.4
    latent = model.vae.encode(frames)
    assert latent.shape == (3, 4, 16, 16)
    assert model.vae.decode(latent).shape == (3, 4, 128, 128)
    recon, mean, logvar = model.vae(frames)
    assert recon.shape == frames.shape and mean.shape == logvar.shape == (3, 4, 16, 16)
    assert (kl_divergence(mean, logvar) >= 0).all()
    # fully convolutional: 48 px crops give 6 x 6 latents
    assert model.vae.encode(frames[..., :48, :48]).shape == (3, 4, 6, 6)


def test_vegenet_shapes_through_every_block():
    model = _randomised(VegeDiff(TINY))
    net = model.vegenet
    z, t, meteo, static = _inputs()
    tokens = net.patchify(z)
    assert tokens.shape == (2, 30, 64, 16)  # 8 x 8 patches of 2 x 2 x 4
    torch.testing.assert_close(net.unpatchify(tokens, 16, 16), z)
    keep = torch.tensor([True, False])
    static_tokens = net.embed_static(static, keep)
    assert static_tokens.shape == (2, 64, TINY.vegenet.hidden)
    torch.testing.assert_close(static_tokens[1], net.null_static.expand(64, -1))  # dropped -> null token
    x = net._embed_frames(z, 0)
    cond = net._conditions(t, meteo, keep, 0)
    assert x.shape == (2, 30, 64, TINY.vegenet.hidden) and cond.shape == (2, 30, TINY.vegenet.hidden)
    mask = net._temporal_mask(30, z.device)
    assert mask.shape == (31, 31) and not mask[:11, 11:].any() and mask[11:].all()
    for block in net.blocks:
        x = block(x, cond, static_tokens, mask)
        assert x.shape == (2, 30, 64, TINY.vegenet.hidden)
    eps = net(z, t, meteo=meteo, static=static, keep_cond=keep)
    assert eps.shape == (2, 20, 4, 16, 16)


def test_context_never_sees_the_future():
    model = _randomised(VegeDiff(TINY))
    z, t, meteo, static = _inputs()
    keep = torch.tensor([True, True])
    cache = model.vegenet.encode_context(z[:, :10], meteo=meteo[:, :10], static=static, keep_cond=keep)
    z2 = z.clone()
    z2[:, 10:] += 1.0  # change only the future
    cache2 = model.vegenet.encode_context(z2[:, :10], meteo=meteo[:, :10], static=static, keep_cond=keep)
    for (k1, v1), (k2, v2) in zip(cache, cache2, strict=False):
        torch.testing.assert_close(k1, k2)
        torch.testing.assert_close(v1, v2)


@pytest.mark.parametrize("meteorology", METEOROLOGY)
def test_cached_context_equals_full_pass(meteorology):
    """Each way the meteorology enters gives the same eps through the sampler's cached path
    (meteo_features applied before the split) as through the training pass."""
    cfg = dataclasses.replace(TINY, vegenet=dataclasses.replace(TINY.vegenet, meteorology=meteorology))
    model = _randomised(VegeDiff(cfg))
    z, t, meteo, static = _inputs()
    keep = torch.tensor([True, False])
    full = model.vegenet(z, t, meteo=meteo, static=static, keep_cond=keep)
    features = model.vegenet.meteo_features(meteo)
    cache = model.vegenet.encode_context(z[:, :10], meteo=features[:, :10], static=static, keep_cond=keep)
    cached = model.vegenet.forward_future(z[:, 10:], t, meteo=features[:, 10:], keep_cond=keep, cache=cache)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)


def test_context_anomaly_reads_the_change_of_weather_not_the_climate():
    """context_anomaly: a constant offset of every frame's meteorology (another climate, same
    weather changes) changes nothing; changing one future frame's weather changes the output.
    none: the meteorology is never read. absolute: the offset matters."""
    z, t, meteo, static = _inputs()
    keep = torch.tensor([True, True])
    shifted = meteo + torch.linspace(-1.0, 1.0, meteo.shape[-1])
    future_change = meteo.clone()
    future_change[:, 15] += 1.0
    outputs = {}
    for meteorology in METEOROLOGY:
        cfg = dataclasses.replace(TINY, vegenet=dataclasses.replace(TINY.vegenet, meteorology=meteorology))
        net = _randomised(VegeDiff(cfg)).vegenet
        outputs[meteorology] = [net(z, t, meteo=m, static=static, keep_cond=keep) for m in (meteo, shifted, future_change)]
    base, offset, change = outputs["context_anomaly"]
    torch.testing.assert_close(offset, base, atol=1e-5, rtol=1e-4)
    assert (change - base).abs().max() > 1e-3
    base, offset, change = outputs["none"]
    torch.testing.assert_close(offset, base)
    torch.testing.assert_close(change, base)
    for meteorology in ("absolute", "absolute_and_anomaly"):  # both read the level
        base, offset, change = outputs[meteorology]
        assert (offset - base).abs().max() > 1e-3 and (change - base).abs().max() > 1e-3


def test_absolute_and_anomaly_reads_the_values_then_their_change():
    cfg = dataclasses.replace(TINY, vegenet=dataclasses.replace(TINY.vegenet, meteorology="absolute_and_anomaly"))
    net = VegeDiff(cfg).vegenet
    _, _, meteo, _ = _inputs()
    features = net.meteo_features(meteo)
    assert features.shape == (2, 30, 48) and net.meteo_embed[0].in_features == 48 == cfg.vegenet.meteo_inputs
    torch.testing.assert_close(features[..., :24], meteo)
    torch.testing.assert_close(features[..., 24:], meteo - meteo[:, :10].mean(dim=1, keepdim=True))
    torch.testing.assert_close(features[:, :10, 24:].mean(dim=1), torch.zeros(2, 24), atol=1e-6, rtol=0)


def test_meteo_dropout_drops_the_weather_alone_in_its_share_of_rows():
    """One uniform draw per row: below cond_dropout both conditions go (CFG), in the next
    meteo_dropout the meteorology alone, above both stay; meteo_dropout 0 passes no keep_meteo."""
    seen = {}

    def eps_model(z, t, *, meteo, static, keep_cond, keep_meteo=None):
        seen.update(keep_cond=keep_cond, keep_meteo=keep_meteo)
        return torch.zeros(z.shape[0], 20, *z.shape[2:])

    z, _, meteo, static = _inputs(batch=2)
    draws = torch.tensor([0.05, 0.2, 0.5, 0.95])
    cfg = dataclasses.replace(TINY.diffusion, cond_dropout=0.1, meteo_dropout=0.3)
    model = VegeDiff(TINY)
    args = dict(context=z[:, :10].repeat(2, 1, 1, 1, 1), meteo=meteo.repeat(2, 1, 1), static=static.repeat(2, 1, 1, 1),
                loss_mask=torch.ones(4, 20, 1, 16, 16), conditioned=torch.tensor([True, True, True, False]),
                alphas_cumprod=model.alphas_cumprod, timesteps=torch.full((4,), 500), noise=torch.randn(4, 20, 4, 16, 16))
    diffusion_loss(eps_model, z[:, 10:].repeat(2, 1, 1, 1, 1), cfg=cfg, dropout_draw=draws, **args)
    assert seen["keep_cond"].tolist() == [False, True, True, False]  # the unconditioned row never keeps either
    assert (seen["keep_cond"] & seen["keep_meteo"]).tolist() == [False, False, True, False]
    diffusion_loss(eps_model, z[:, 10:].repeat(2, 1, 1, 1, 1), cfg=TINY.diffusion, dropout_draw=draws, **args)
    assert seen["keep_meteo"] is None


def test_dropping_the_meteorology_alone_keeps_the_static_layers():
    net = _randomised(VegeDiff(TINY)).vegenet
    static_keep = []
    embed_static = net.embed_static
    net.embed_static = lambda static, keep: static_keep.append(keep.tolist()) or embed_static(static, keep)
    z, t, meteo, static = _inputs()
    keep, no_weather = torch.tensor([True, True]), torch.tensor([False, True])
    dropped = net(z, t, meteo=meteo, static=static, keep_cond=keep, keep_meteo=no_weather)
    assert static_keep == [[True, True]]  # the static token of both rows is the site's
    other_weather = meteo.clone()
    other_weather[0] += 5.0
    torch.testing.assert_close(net(z, t, meteo=other_weather, static=static, keep_cond=keep, keep_meteo=no_weather), dropped)
    full = net(z, t, meteo=meteo, static=static, keep_cond=keep)
    assert (dropped[0] - full[0]).abs().max() > 1e-3  # row 0's weather was dropped
    torch.testing.assert_close(dropped[1], full[1])  # row 1 kept it


def test_unknown_meteorology_is_refused():
    cfg = dataclasses.replace(TINY, vegenet=dataclasses.replace(TINY.vegenet, meteorology="climate"))
    with pytest.raises(ValueError, match="unknown meteorology 'climate'"):
        VegeDiff(cfg)


def test_static_layers_change_the_output_only_when_kept():
    model = _randomised(VegeDiff(TINY))
    z, t, meteo, static = _inputs()
    keep = torch.tensor([True, False])
    a = model.vegenet(z, t, meteo=meteo, static=static, keep_cond=keep)
    b = model.vegenet(z, t, meteo=meteo, static=static + 1.0, keep_cond=keep)
    assert (a[0] - b[0]).abs().max() > 1e-6  # conditioned row depends on static layers
    torch.testing.assert_close(a[1], b[1])  # dropped row does not


@pytest.mark.parametrize("sampler", ["euler", "dpmpp2m"])
def test_sampler_is_deterministic_with_a_seed(sampler):
    from vegediff_cli.config import SamplerSettings

    model = _randomised(VegeDiff(TINY))
    z, _, meteo, static = _inputs(batch=1)
    settings = SamplerSettings(sampler=sampler, steps=3)
    draws = [
        model.sample(z[:, :10], meteo=meteo, static=static, conditioned=True, members=2, settings=settings,
                     generator=torch.Generator().manual_seed(seed))
        for seed in (7, 7, 8)
    ]
    assert draws[0].shape == (2, 1, 20, 4, 16, 16)
    torch.testing.assert_close(draws[0], draws[1], atol=0, rtol=0)
    assert (draws[0] - draws[2]).abs().max() > 1e-3
    assert (draws[0][0] - draws[0][1]).abs().max() > 1e-3  # members differ


def test_weights_round_trip(tmp_path):
    model = _randomised(VegeDiff(TINY), seed=3)
    path = save_weights(model, tmp_path / "w.safetensors", metadata={"trained_on": "[]"})
    loaded, meta = load_weights(path)
    assert loaded.cfg == model.cfg
    assert meta["trained_on"] == "[]" and read_metadata(path)["format"] == "vegediff-weights/1"
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert ModelConfig.from_dict(model.cfg.to_dict()) == model.cfg


def test_weights_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a weights file")
    with pytest.raises(ModelError, match="not a readable weights file"):
        load_weights(bad)


def test_meteorology_mode_is_stored_and_an_unknown_one_refused(tmp_path):
    cfg = dataclasses.replace(TINY, vegenet=dataclasses.replace(TINY.vegenet, meteorology="context_anomaly"))
    path = save_weights(_randomised(VegeDiff(cfg)), tmp_path / "w.safetensors", metadata={})
    assert load_weights(path)[0].cfg.vegenet.meteorology == "context_anomaly"
    tensors, meta = load_file(str(path)), read_metadata(path)
    meta["config"] = meta["config"].replace('"context_anomaly"', '"climate"')
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match="invalid model configuration .*unknown meteorology 'climate'"):
        load_weights(tmp_path / "bad.safetensors")


def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = VegeDiff(dataclasses.replace(TINY)).train()
    z, _, meteo, static = _inputs(batch=2)
    context, future = model.to_diffusion_space(z[:, :10], z[:, 10:])
    weights = torch.ones(2, 20, 1, 16, 16)
    weights[:, 15:] = 0  # frames past the end of the series carry no loss
    optimiser = torch.optim.SGD(model.vegenet.parameters(), lr=0.05)

    def loss_at(seed: int) -> torch.Tensor:
        return diffusion_loss(model.vegenet, future, context=context, meteo=meteo, static=static, loss_mask=weights,
                              conditioned=torch.tensor([True, True]), alphas_cumprod=model.alphas_cumprod,
                              cfg=model.cfg.diffusion, generator=torch.Generator().manual_seed(seed))

    before = loss_at(1)
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    with torch.no_grad():
        after = loss_at(1)  # same timesteps, noise and dropout draws
    assert after < before


def test_masked_cells_do_not_contribute():
    model = VegeDiff(TINY)
    z, _, meteo, static = _inputs(batch=1)
    weights = torch.zeros(1, 20, 1, 16, 16)
    weights[:, :5] = 1

    def predicts_clean_signal(zt, t, **kwargs):  # eps guess that depends on the noised input
        return zt[:, 10:] * 0.5

    kwargs = dict(context=z[:, :10], meteo=meteo, static=static, loss_mask=weights, conditioned=torch.tensor([True]),
                  alphas_cumprod=model.alphas_cumprod, cfg=model.cfg.diffusion)
    future = z[:, 10:].clone()
    a = diffusion_loss(predicts_clean_signal, future, generator=torch.Generator().manual_seed(0), **kwargs)
    future[:, 5:] = 100.0  # corrupt only the masked frames
    b = diffusion_loss(predicts_clean_signal, future, generator=torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(a, b)
    future[:, 0] += 1.0  # an unmasked frame does count
    c = diffusion_loss(predicts_clean_signal, future, generator=torch.Generator().manual_seed(0), **kwargs)
    assert not torch.isclose(a, c)


def test_ema_warm_up_forgets_the_initial_weights():
    from vegediff_cli.training.checkpoint import EMA

    layer = torch.nn.Linear(2, 2)
    torch.nn.init.zeros_(layer.weight)
    ema = EMA(layer, decay=0.999)
    torch.nn.init.ones_(layer.weight)
    for _ in range(50):
        ema.update(layer)
    # a plain 0.999 average would still be 95 % initial weights after 50 updates
    assert float(ema.state_dict()["weight"].mean()) > 0.8
    assert ema.current_decay() < 0.999


def test_ema_restored_from_a_checkpoint_stays_with_the_module():
    """A checkpoint loads on the CPU; the restored average must take the module's device and dtype, or
    the next update of a run resumed on a GPU mixes devices (found resuming a run on the lent H200)."""
    from vegediff_cli.training.checkpoint import EMA

    layer = torch.nn.Linear(2, 2).double()  # stands in for a module on another device than the checkpoint
    ema = EMA(layer)
    saved = {k: v.float().clone() + 1.0 for k, v in ema.state_dict().items()}  # as loaded: float32, CPU
    ema.load_state_dict(saved)
    assert all(v.dtype == torch.float64 for v in ema.state_dict().values())
    torch.testing.assert_close(ema.state_dict()["weight"], saved["weight"].double())
    ema.update(layer)  # no mixing error
    assert ema.state_dict()["weight"].dtype == torch.float64
